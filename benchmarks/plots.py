"""Bar charts of a benchmark run's measured figures, written as PNG files the documentation includes.

The scripts pass what they measured; nothing here holds a figure. Each chart is one row of panels, each panel bars
grouped along the x axis (one bar per series in each group) or stacked (the series piled up in each group).
"""

from __future__ import annotations

import io
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onevision_encoder.common.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass
class Panel:
    """One set of axes: ``series`` maps a legend label to one value per group (``None``: not measured)."""

    title: str
    ylabel: str
    groups: Sequence[str]
    series: dict[str, Sequence[float | None]]
    stacked: bool = False
    value_format: str = "{:.0f}"  # the label printed on each bar of a grouped panel ("" for none)
    reference_line: float | None = None  # e.g. 1.0 on a ratio axis
    legend_outside: bool = False  # many series: the legend beside the axes, not on them


def machine() -> str:
    """The machine in a few words, for a chart's title."""
    return f"{os.cpu_count()}-core {platform.machine()}"


def save_bar_chart(
    path: str | os.PathLike[str],
    title: str,
    panels: Sequence[Panel],
    size_px: tuple[int, int] = (900, 500),
    dpi: int = 100,
) -> Path:
    """Draw ``panels`` side by side under ``title`` and write the PNG to ``path`` atomically (``size_px`` exactly)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    for panel in panels:
        for label, values in panel.series.items():
            if len(values) != len(panel.groups):
                raise ValueError(
                    f"panel {panel.title!r}: series {label!r} has {len(values)} values for {len(panel.groups)} groups"
                )
    widths = [2 if panel.legend_outside else 1 for panel in panels]
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(size_px[0] / dpi, size_px[1] / dpi),
        dpi=dpi,
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": widths},
    )
    # Panels with the same series share one legend below them, so that no legend hides a bar.
    shared_legend = len({tuple(panel.series) for panel in panels}) == 1 and not panels[0].legend_outside
    try:
        for ax, panel in zip(axes[0], panels, strict=True):
            draw_panel(ax, panel, legend=not shared_legend)
        figure.suptitle(title, fontsize=10)
        if shared_legend:
            handles, labels = axes[0][0].get_legend_handles_labels()
            figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, frameon=False)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return atomic_write(path, buffer.getvalue())


def draw_panel(ax: Axes, panel: Panel, legend: bool) -> None:
    import matplotlib
    import numpy as np

    positions = np.arange(len(panel.groups))
    count = len(panel.series)
    width = 0.8 if panel.stacked else 0.8 / max(count, 1)
    bottoms = np.zeros(len(panel.groups))
    if count > 10:  # more series than the default colour cycle has colours
        ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](index % 20) for index in range(count)])
    for index, (label, values) in enumerate(panel.series.items()):
        heights = np.array([np.nan if value is None else value for value in values], dtype=float)
        if panel.stacked:
            bars = ax.bar(positions, np.nan_to_num(heights), width, bottom=bottoms, label=label)
            bottoms += np.nan_to_num(heights)
        else:
            offset = (index - (count - 1) / 2) * width
            bars = ax.bar(positions + offset, heights, width, label=label)
            if panel.value_format:
                labels = ["" if np.isnan(h) else panel.value_format.format(h) for h in heights]
                ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    if panel.reference_line is not None:
        ax.axhline(panel.reference_line, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(positions, panel.groups, fontsize=8)
    ax.set_ylabel(panel.ylabel, fontsize=9)
    ax.set_title(panel.title, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.08)  # room for the labels above the tallest bar
    if panel.legend_outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), reverse=panel.stacked)
    elif legend and count > 1:  # one series: the panel's title names it
        ax.legend(fontsize=7, reverse=panel.stacked)  # stacked: listed top to bottom, as piled
