"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from dml.indexing import faiss_threads


@pytest.fixture(scope="module")
def one_faiss_thread():
    """FAISS on one OpenMP thread: the metric tests' searches are tiny, and on a shared 2-core
    machine spinning threads cost more than they save. Every assertion holds with 1 or 2 threads."""
    with faiss_threads(1):
        yield
