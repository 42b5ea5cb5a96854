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


TIERS = ("integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """Tests with neither tier marker are unit tests (no child process, no server, no dvc): marked
    ``unit`` so that ``-m unit`` selects them; the fast tier is ``-m "not e2e"``."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)
