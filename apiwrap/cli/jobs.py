"""``apiwrap jobs`` and ``apiwrap show JOB``: the jobs a runs folder holds, read from their journals.

Both only read: no journal is changed and no query is sent.
"""

from __future__ import annotations

import datetime
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from apiwrap.engine.journal import Journal

__all__ = ["JobSummary", "list_jobs", "show_job", "summarise"]

out = Console(soft_wrap=True)
errors = Console(stderr=True)

RunsOpt = Annotated[Path, typer.Option(help="Folder of job journals.")]


@dataclass(frozen=True)
class JobSummary:
    """One job as its journal tells it."""

    name: str
    journal: Path
    #: When its first run started (epoch seconds); None for a journal no run has started.
    started: float | None
    parameters: dict[str, Any]
    statuses: Counter[str]
    radii: list[float]
    spent_micro_usd: int
    billed_queries: int
    runs: int
    image_names: list[str]

    @property
    def images(self) -> int:
        return sum(self.statuses.values())

    @property
    def certified(self) -> int:
        return self.statuses["certified"]

    @property
    def state(self) -> str:
        """finished, or unfinished (interrupted, or still running) while an image is pending."""
        return "unfinished" if self.statuses["pending"] or not self.images else "finished"


def summarise(path: Path) -> JobSummary:
    import sqlite3

    from apiwrap.engine.journal import Journal
    from apiwrap.errors import JournalError

    try:
        return _summarise(Journal.open_existing(path))
    except sqlite3.DatabaseError as exc:
        # Only the header is checked on opening (a listing stays cheap): damage further in shows here.
        raise JournalError(f"journal {path} is damaged ({exc}); apiwrap verify says more") from None


def _summarise(journal: Journal) -> JobSummary:
    try:
        images = journal.images()
        statuses = Counter((image.result or {}).get("status", image.status) for image in images)
        radii = [
            image.result["radius"]
            for image in images
            if image.result is not None and image.result.get("status") == "certified"
        ]
        runs = journal.runs()
        spent, billed = journal.spent()
        return JobSummary(
            name=journal.path.stem,
            journal=journal.path,
            started=runs[0].started_at if runs else None,
            parameters=journal.parameters() or {},
            statuses=statuses,
            radii=radii,
            spent_micro_usd=spent,
            billed_queries=billed,
            runs=len(runs),
            image_names=[image.name for image in images],
        )
    finally:
        journal.close()


def _settings(parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vendor, mode and the options its procedure reads; everything else the journal binds:
    noise scheme, encoding, label rule, model options, the denoiser's provenance)."""
    import dataclasses

    from apiwrap.engine.settings import settings_options
    from apiwrap.statistics.settings import CertificationSettings

    fields = {field.name for field in dataclasses.fields(CertificationSettings)}
    settings = CertificationSettings(**{k: v for k, v in parameters.items() if k in fields})
    chosen = {"vendor": settings.vendor, "mode": settings.mode} | settings_options(settings)
    return chosen, {k: v for k, v in sorted(parameters.items()) if k not in fields}


def _when(epoch: float | None, seconds: bool = True) -> str:
    if epoch is None:
        return "never run"
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M")


def _fail(message: str) -> None:
    errors.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def list_jobs(runs_dir: RunsOpt = Path("runs")) -> None:
    """List the jobs in the runs folder, newest first: when, vendor, images, certified, spend, state."""
    from apiwrap.budgets import format_usd
    from apiwrap.errors import ApiwrapError

    if not runs_dir.is_dir():
        _fail(f"no runs folder at {runs_dir} (certify writes its journals there; see --runs-dir)")
    summaries: list[JobSummary] = []
    for path in sorted(runs_dir.glob("*.sqlite")):
        try:
            summaries.append(summarise(path))
        except (ApiwrapError, OSError) as exc:
            errors.print(f"[yellow]skipped[/yellow] {escape(str(path))}: {escape(str(exc))}")
    if not summaries:
        out.print(f"no jobs in {escape(str(runs_dir))}")
        return
    summaries.sort(key=lambda job: (job.started or 0.0, job.name), reverse=True)
    table = Table(title=f"Jobs in {escape(str(runs_dir))}, newest first")
    table.add_column("job", min_width=12, overflow="fold")  # a name is copied whole: folded, never cut
    for column in ("started (UTC)", "vendor", "images", "certified", "spend", "state"):
        table.add_column(column, justify="right" if column in {"images", "certified", "spend"} else "left")
    for job in summaries:
        table.add_row(
            escape(job.name),
            _when(job.started, seconds=False),
            escape(str(job.parameters.get("vendor", ""))),
            str(job.images),
            str(job.certified) if job.parameters.get("mode") == "certify" else "- (predict)",
            format_usd(job.spent_micro_usd),
            job.state,
        )
    out.print(table)


def show_job(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job name (or path to its journal).")],
    runs_dir: RunsOpt = Path("runs"),
) -> None:
    """Show one job: its settings, what it certified and spent, and where its files are."""
    from apiwrap.budgets import format_usd
    from apiwrap.engine.jobs import journal_path
    from apiwrap.errors import ApiwrapError

    try:
        path = Path(job) if job.endswith(".sqlite") else journal_path(runs_dir, job)
        summary = summarise(path)
    except (ApiwrapError, OSError) as exc:
        _fail(str(exc))
    name = escape(summary.name)
    out.print(
        f"[bold]{name}[/bold]: {summary.state}, {summary.runs} run(s), first started {_when(summary.started)}"
    )
    chosen, bound = _settings(summary.parameters)
    for title, values in (("Settings (the options that resolve to this job)", chosen), ("Also bound", bound)):
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column("setting")
        table.add_column("value")
        for key, value in values.items():
            table.add_row(escape(key), escape(str(value)))
        out.print(table)
    counts = ", ".join(f"{count} {status}" for status, count in sorted(summary.statuses.items()))
    out.print(f"images: {summary.images} ({counts or 'none yet'})")
    if summary.parameters.get("mode") == "certify":
        median = f", median radius {statistics.median(summary.radii):.3f}" if summary.radii else ""
        out.print(f"certified: {summary.certified} of {summary.images}{median}")
    per_certificate = (
        f", {format_usd(summary.spent_micro_usd // summary.certified)} a certificate"
        if summary.certified
        else ""
    )
    spent = format_usd(summary.spent_micro_usd)
    out.print(f"spent: {spent} for {summary.billed_queries} billable queries{per_certificate}")
    out.print(f"journal: {escape(str(path.resolve()))}")
    folders = sorted({str(Path(image).resolve().parent) for image in summary.image_names})
    out.print("images from: " + escape(", ".join(folders) if folders else "none yet"))
    out.print(
        f"report: apiwrap report {escape(str(path))} --html {name}.html; "
        f"resume: the same certify command with --job {name}"
    )
