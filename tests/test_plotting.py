"""The one figure writer: the same figure gives the same PNG bytes (no matplotlib version stamp),
and a figure that fails to draw or to be written leaves the previous file as it was."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from dml.plotting import save_figure  # noqa: E402


def _figure(title: str = "loss") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
    ax.plot([1, 2, 3], [0.9, 0.5, 0.4], marker="o")
    ax.set_title(title)
    return fig


def test_same_figure_same_bytes_and_no_version_text(tmp_path):
    """Reference: two separately built identical figures, written to two files: equal bytes, a
    PNG with no Software chunk and no matplotlib name or version anywhere in it."""
    first, second = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    save_figure(_figure(), first)
    save_figure(_figure(), second)
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"Software" not in data and b"matplotlib" not in data.lower() and matplotlib.__version__.encode() not in data
    assert plt.get_fignums() == []  # written figures are closed


def _bad_text() -> plt.Figure:
    return _figure(r"$\notacommand{x}$")  # invalid mathtext: fails when drawn


def _half_written() -> plt.Figure:
    fig = _figure()

    def savefig(target, **kwargs) -> None:  # the file is cut short (disk full, killed)
        Path(target).write_bytes(b"\x89PNG half")
        raise OSError("No space left on device")

    fig.savefig = savefig
    return fig


@pytest.mark.parametrize("broken", [_bad_text, _half_written])
def test_failing_draw_keeps_the_previous_file(tmp_path, broken):
    """Reference: the bytes of the previous good figure; a figure that fails while drawn or while
    written raises, and the file, byte for byte, and the folder stay as they were."""
    path = tmp_path / "plot.png"
    save_figure(_figure(), path)
    before = path.read_bytes()
    with pytest.raises((ValueError, OSError)):
        save_figure(broken(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["plot.png"]  # no temporary file left
    assert plt.get_fignums() == []
