"""The certified-accuracy curve: accuracy against L2 radius with its 95% band, one curve per job.

Certified accuracy at r is the share of images certified at radius >= r with the vendor's
clean label; as a function of r it is a step function that only drops just after a
certified radius. It is evaluated exactly at those radii (and at the report radii, which
are marked) with :func:`apiwrap.statistics.summary.certified_accuracy`, so the plotted
curve and band are the same numbers as the CLI's table, not an interpolation.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from apiwrap.errors import ConfigurationError, MissingExtra
from apiwrap.reports._job import JobRecord
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.summary import AccuracyAtRadius, certified_accuracy, certified_at

__all__ = ["accuracy_steps", "curve_png", "legend_label", "write_png"]

# Each job's curve differs in colour, line style and marker, so curves stay apart in grey too.
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def accuracy_steps(job: JobRecord, until: float) -> list[AccuracyAtRadius]:
    """Certified accuracy at every radius where it can change, from 0 to ``until``."""
    results = job.results
    radii = {0.0, until, *report_radii(job.settings.sigma)}
    radii |= {r.radius for r in results if r.radius is not None and certified_at(r, 0.0)}
    return certified_accuracy(results, sorted(radius for radius in radii if radius <= until))


def _plottable(job: JobRecord) -> None:
    if job.settings.mode != "certify":
        raise ConfigurationError(f"job {job.name!r} is a predict job: its labels carry no radius to plot")
    if accuracy_steps(job, 0.0)[0].images == 0:
        raise ConfigurationError(
            f"job {job.name!r} has no certified or abstained image with a clean label to plot"
        )


def legend_label(job: JobRecord, images: int) -> str:
    """A curve's legend: the settings that tell jobs apart, and how many images it counts."""
    return f"{job.describe()} ({images} image{'s' if images != 1 else ''})"


def curve_png(jobs: Sequence[JobRecord]) -> bytes:
    """The curves of ``jobs`` on one plot, as PNG bytes."""
    if not jobs:
        raise ConfigurationError("no job to plot")
    for job in jobs:
        _plottable(job)
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra(
            "the certified-accuracy plot needs matplotlib: pip install 'apiwrap-certify[report]'",
            extra="report",
        ) from exc

    largest = max(
        [report_radii(job.settings.sigma)[-1] for job in jobs]
        + [r.radius for job in jobs for r in job.results if r.radius is not None]
    )
    until = 1.05 * largest
    several = len(jobs) > 1
    # Figure, not pyplot: no global state, so the service can draw in any thread. Several jobs get
    # a legend below the axes (one line each), so the curves stay in view.
    figure = Figure(figsize=(7.5, 4.5 + (0.22 * len(jobs) if several else 0)), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    for number, job in enumerate(jobs):
        steps = accuracy_steps(job, until)
        radii = [row.radius for row in steps]
        images = steps[0].images
        # Accuracy at r counts radii >= r: on (r_prev, r] it holds the value at r ("steps-pre").
        (line,) = axes.plot(
            radii,
            [row.accuracy for row in steps],
            drawstyle="steps-pre",
            linestyle=_LINESTYLES[number % len(_LINESTYLES)],
            linewidth=1.8,
            label=legend_label(job, images),
        )
        # Bands of several jobs overlap: fainter, so every curve stays readable through them.
        axes.fill_between(
            radii,
            [row.low for row in steps],
            [row.high for row in steps],
            step="pre",
            color=line.get_color(),
            alpha=0.08 if several else 0.15,
            linewidth=0,
        )
        marks = [row for row in steps if row.radius in set(report_radii(job.settings.sigma))]
        axes.plot(
            [row.radius for row in marks],
            [row.accuracy for row in marks],
            _MARKERS[number % len(_MARKERS)],
            color=line.get_color(),
        )
    axes.set_xlim(0, until)
    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    axes.set_xlabel("L2 radius (image as certified, values in [0, 1])")
    axes.set_ylabel("certified accuracy")
    axes.set_title(
        "Certified accuracy (agreement with the vendor's clean label); band: 95% interval over images",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    if several:
        axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=1, frameon=False)
    else:
        axes.legend(fontsize=8, loc="upper right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_png(jobs: Sequence[JobRecord], path: Path) -> None:
    path.write_bytes(curve_png(jobs))
