"""benchmarks/plots.py: the charts the benchmark scripts draw from their measured figures (`--plot PATH`)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def plots(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import it as a sibling module
    import plots

    yield plots
    sys.modules.pop("plots", None)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_chart_is_one_png_of_the_requested_size_and_nothing_else(plots, tmp_path: Path) -> None:
    target = tmp_path / "charts" / "attention.png"  # a folder that does not exist yet
    groups = ["1024", "2048", "4096"]
    written = plots.save_bar_chart(
        target,
        "grouped and stacked panels",
        [
            plots.Panel("time", "ms", groups, {"sdpa": [329.0, 742.0, 1877.0], "eager": [465.0, 1429.0, None]}),
            plots.Panel("share", "ms", groups, {"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}, stacked=True),
        ],
        size_px=(640, 360),
        dpi=80,
    )
    assert written == target
    assert png_size(target) == (640, 360)
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["attention.png", "charts"]


def test_many_stacked_series_with_the_legend_beside_the_axes(plots, tmp_path: Path) -> None:
    stages = {f"stage {index}": [float(index), float(index + 1)] for index in range(17)}  # beyond one colour cycle
    target = tmp_path / "selection.png"
    plots.save_bar_chart(target, "breakdown", [plots.Panel("", "ms", ["a", "b"], stages, True, legend_outside=True)])
    assert png_size(target) == (900, 500)
    assert [path.name for path in tmp_path.iterdir()] == ["selection.png"]


def test_a_series_of_the_wrong_length_writes_nothing_and_keeps_the_old_file(plots, tmp_path: Path) -> None:
    target = tmp_path / "compile.png"
    target.write_bytes(b"the chart of an earlier run")
    panel = plots.Panel("time", "ms", ["1024", "2048"], {"eager": [3254.0]})
    with pytest.raises(ValueError, match="'eager' has 1 values for 2 groups"):
        plots.save_bar_chart(target, "mismatched", [panel])
    assert target.read_bytes() == b"the chart of an earlier run"
    assert [path.name for path in tmp_path.iterdir()] == ["compile.png"]


def test_a_write_failing_halfway_leaves_the_old_file_and_no_partial_one(
    plots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    def interrupted(figure: Figure, target: object, **kwargs: object) -> None:
        if isinstance(target, (str, Path)):
            Path(target).write_bytes(b"\x89PNG half")
        else:
            target.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", interrupted)
    target = tmp_path / "codec_video.png"
    target.write_bytes(b"the chart of an earlier run")
    with pytest.raises(OSError, match="disk full"):
        plots.save_bar_chart(target, "interrupted", [plots.Panel("time", "s", ["a"], {"ours": [1.0]})])
    assert target.read_bytes() == b"the chart of an earlier run"
    assert [path.name for path in tmp_path.iterdir()] == ["codec_video.png"]
