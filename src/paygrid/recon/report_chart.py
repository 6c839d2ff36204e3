"""The report's chart: per channel, per business date of the days ending on the report's date,
the latest run's matched count (bars) against its differences (a line, on its own axis: a few
differences beside thousands matched would not show). A date without a run is a gap.

Matplotlib's Agg canvas straight on a Figure (no pyplot, no global state); the PNG carries no
software or time stamp, so the same data gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

from paygrid.recon.report import DAYS, DayCounts

MATCHED, DIFFERENCES, NO_RUN = "#4c78a8", "#e45756", "#bbbbbb"


def write_chart(
    path: Path,
    day: date,
    history: Mapping[str, Mapping[date, DayCounts]],
    days: int = DAYS,
) -> None:
    """A PNG at ``path``: a panel per channel of ``history``, ``days`` dates ending on ``day``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    dates = [day - timedelta(days=days - 1 - i) for i in range(days)]
    channels = sorted(history) or ["(no runs)"]
    figure = Figure(figsize=(12, 1.2 + 2.8 * len(channels)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(
        f"Reconciliation {dates[0]} to {day}: matched vs differences per channel "
        "(latest run per date)"
    )
    axes = figure.subplots(len(channels), 1, sharex=True, squeeze=False)[:, 0]
    xs = list(range(days))
    for ax, channel in zip(axes, channels, strict=True):
        per_day = history.get(channel, {})
        counts = [per_day.get(d) for d in dates]
        matched = [c.matched if c else 0 for c in counts]
        bars = ax.bar(xs, matched, color=MATCHED, label="matched (count)")
        ax.set_ylabel("matched")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin = ax.twinx()
        line = twin.plot(
            xs,
            [c.differences if c else math.nan for c in counts],  # NaN: a gap in the line
            color=DIFFERENCES,
            marker="o",
            label="differences (count)",
        )
        twin.set_ylabel("differences", color=DIFFERENCES)
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin.set_ylim(bottom=0, top=max([1, *(c.differences for c in counts if c)]) * 1.2)
        gaps = [x for x, c in zip(xs, counts, strict=True) if c is None]
        shade = [ax.axvspan(x - 0.5, x + 0.5, color=NO_RUN, alpha=0.25, lw=0) for x in gaps]
        handles = [bars, *line, *shade[:1]]
        labels = ["matched (count)", "differences (count)", "no run"][: len(handles)]
        twin.legend(  # above the panel, right: clear of the bars and the line
            handles, labels, loc="lower right", bbox_to_anchor=(1, 1), ncols=3, fontsize=8
        )
        ax.set_title(channel, loc="left")
    last = axes[-1]
    last.set_xticks(xs, [d.strftime("%m-%d") for d in dates], rotation=90, fontsize=8)
    last.set_xlim(-0.5, days - 0.5)
    last.set_xlabel("business date")
    figure.savefig(path, format="png", metadata={"Software": None})
