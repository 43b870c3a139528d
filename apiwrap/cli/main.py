"""The ``apiwrap`` command line: certify, predict, estimate, replay (and the tools of other packages).

Heavy modules (torch, Pillow, SQLite, the engine) are imported inside the commands that use
them, so ``apiwrap --help`` and ``apiwrap replay`` start without torch. Every results file is
written beside its name and renamed into place when complete (:func:`_results_file`), and every
name, label and error printed is escaped, so no file name reads as Rich markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from apiwrap.cli._help import ReadableGroup, readable_help
from apiwrap.cli.denoisers import eval_denoiser, train_denoiser
from apiwrap.cli.emulate import emulate
from apiwrap.cli.jobs import list_jobs, show_job
from apiwrap.cli.serve import serve
from apiwrap.cli.verify import verify
from apiwrap.engine.settings import CertificationOptions, ConnectionOptions, JobOptions, SettingsError
from apiwrap.errors import ApiwrapError
from apiwrap.statistics.settings import Mode, Selection

if TYPE_CHECKING:
    from apiwrap.cli.progress import JobProgress
    from apiwrap.engine.jobs import JobReport, JobSpec
    from apiwrap.statistics.procedures import ImageResult
    from apiwrap.statistics.settings import CertificationSettings

app = typer.Typer(
    help="Certified labels from black-box vision APIs by denoised randomized smoothing.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=ReadableGroup,
)
console = Console(stderr=True)
out = Console(soft_wrap=True)

# Defaults and help come from the settings model every door shares (apiwrap.engine.settings);
# only what the user typed is passed on, so the model's rules see exactly what was asked for.
SETTINGS, RUN, CONNECTION = CertificationOptions(), JobOptions(), ConnectionOptions()


# certify's options in the panels of its help, in the order a first job meets them.
_VENDOR = "Vendor"
_CERT = "Certification"
_SEQ = "Sequential design (stop each image once its votes decide)"
_MONEY = "Budget"
_RATE = "Rate, retries and workers"
_OUT = "Job, journal and output"


def _help(model: type[BaseModel], name: str) -> str:
    return escape(model.model_fields[name].description or "")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


ImagesArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="PATH...", help="Image files or folders (PNG, JPEG, WebP).", exists=True, show_default=False
    ),
]
VendorOpt = Annotated[
    str,
    typer.Option(rich_help_panel=_VENDOR, help="Vendor adapter: local, aws, google, azure, clarifai, http."),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(rich_help_panel=_VENDOR, help="Override the vendor's endpoint URL (e.g. an emulator)."),
]
SigmaOpt = Annotated[
    float | None, typer.Option(rich_help_panel=_CERT, help=_help(CertificationOptions, "sigma"))
]
N0Opt = Annotated[int, typer.Option("--n0", rich_help_panel=_CERT, help=_help(CertificationOptions, "n0"))]
NOpt = Annotated[int, typer.Option("--n", rich_help_panel=_CERT, help=_help(CertificationOptions, "n"))]
AlphaOpt = Annotated[float, typer.Option(rich_help_panel=_CERT, help=_help(CertificationOptions, "alpha"))]
SeedOpt = Annotated[int, typer.Option(rich_help_panel=_CERT, help=_help(CertificationOptions, "seed"))]
DenoiserOpt = Annotated[
    str, typer.Option(rich_help_panel=_CERT, help=_help(CertificationOptions, "denoiser"))
]
SizeOpt = Annotated[int | None, typer.Option(rich_help_panel=_CERT, help=_help(CertificationOptions, "size"))]
TargetRadiusOpt = Annotated[
    float | None, typer.Option(rich_help_panel=_SEQ, help=_help(CertificationOptions, "target_radius"))
]
MaxQueriesOpt = Annotated[
    int | None, typer.Option(rich_help_panel=_SEQ, help=_help(CertificationOptions, "max_queries"))
]
SelectionOpt = Annotated[
    Selection, typer.Option(rich_help_panel=_CERT, help=_help(CertificationOptions, "selection"))
]
OutOpt = Annotated[
    Path | None, typer.Option(rich_help_panel=_OUT, help="Write one JSON line per image here.")
]
JobOpt = Annotated[str | None, typer.Option(rich_help_panel=_OUT, help=_help(JobOptions, "job"))]
RunsOpt = Annotated[Path, typer.Option(rich_help_panel=_OUT, help="Folder of job journals.")]
MaxUsdOpt = Annotated[str | None, typer.Option(rich_help_panel=_MONEY, help=_help(JobOptions, "max_usd"))]
MaxJobQueriesOpt = Annotated[
    int | None, typer.Option(rich_help_panel=_MONEY, help=_help(JobOptions, "max_job_queries"))
]
AllocateOpt = Annotated[bool, typer.Option(rich_help_panel=_MONEY, help=_help(JobOptions, "allocate"))]
ForceOpt = Annotated[bool, typer.Option(rich_help_panel=_CERT, help=_help(JobOptions, "force_denoiser"))]
TpsOpt = Annotated[float | None, typer.Option(rich_help_panel=_RATE, help=_help(ConnectionOptions, "tps"))]
ConcurrencyOpt = Annotated[
    int, typer.Option(rich_help_panel=_RATE, help=_help(ConnectionOptions, "concurrency"))
]
AttemptsOpt = Annotated[
    int, typer.Option(rich_help_panel=_RATE, help=_help(ConnectionOptions, "max_attempts"))
]
PricesOpt = Annotated[
    Path | None,
    typer.Option(rich_help_panel=_MONEY, help="TOML file overriding the price table.", exists=True),
]
RequestTimeoutOpt = Annotated[
    float,
    typer.Option(metavar="SECONDS", rich_help_panel=_RATE, help=_help(ConnectionOptions, "request_timeout")),
]
FutilityOpt = Annotated[
    float, typer.Option(rich_help_panel=_SEQ, help=_help(CertificationOptions, "futility"))
]
EmulateOpt = Annotated[
    bool,
    typer.Option(
        rich_help_panel=_VENDOR,
        help="Start the vendor's wire-protocol emulator on 127.0.0.1 and certify against it.",
    ),
]
ReportDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        rich_help_panel=_OUT,
        help="When the job ends, write DIR/JOB.html, .csv and .png (docs/reports.md).",
    ),
]

RayOpt = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=_RATE,
        metavar="ADDRESS",
        help="Prepare samples and send queries from Ray workers (pip install 'apiwrap-certify\\[ray]'): "
        "'local' starts Ray on this machine, 'auto' joins this machine's cluster, or HOST:PORT; the journal, "
        "budget and rate limit stay here (docs/scale.md).",
    ),
]


class ExitCode(IntEnum):
    """How ``certify`` and ``predict`` end, for scripts; the README's table lists them."""

    OK = 0  # every image certified, predicted or abstained on its evidence
    USAGE = 2  # bad options, configuration or journal: nothing was run
    IMAGES_FAILED = 3  # some images failed (unreadable, refused by the vendor's limits, no answer)
    BUDGET_EXHAUSTED = 4  # the budget ran out: some images were left unfunded
    JOB_ABORTED = 5  # the job stopped for every image (e.g. the vendor refused the credentials)
    INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: the journal keeps every answered vote


def _print_version(asked: bool) -> None:
    if asked:
        from apiwrap import __version__

        out.print(f"apiwrap {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print apiwrap's version and exit."
        ),
    ] = False,
) -> None:
    """Certified labels from black-box vision APIs by denoised randomized smoothing."""


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}")  # "pip install 'x[extra]'" is not markup
    raise typer.Exit(ExitCode.USAGE)


def _exit_code(report: JobReport) -> ExitCode:
    """The most serious outcome of a job: aborted, then budget, then failed images."""
    if report.aborted is not None:
        return ExitCode.JOB_ABORTED
    if report.budget_exhausted or any(r.status == "budget" for r in report.results):
        return ExitCode.BUDGET_EXHAUSTED
    if any(r.status == "failed" for r in report.results):
        return ExitCode.IMAGES_FAILED
    return ExitCode.OK


def _fail_settings(error: SettingsError) -> None:
    for name, why in error.problems:
        console.print(f"[red]error:[/red] {escape(_flag(name))}: {escape(why)}")
    raise typer.Exit(ExitCode.USAGE)


def _fields(model: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in model.model_fields if name in values}


def _typed_settings(ctx: typer.Context, values: Mapping[str, Any]) -> CertificationOptions:
    """The certification options the user typed; those left at their defaults are not passed,
    so the model's rules (an option the procedure would ignore is refused) see what was asked."""
    from apiwrap.engine.settings import parse_options

    # typer vendors its own click, so the source is told by name, not by click's enum.
    sources = {name: ctx.get_parameter_source(name) for name in _fields(CertificationOptions, values)}
    typed = {
        name: values[name]
        for name, source in sources.items()
        if source is not None and source.name not in {"DEFAULT", "DEFAULT_MAP"}
    }
    return parse_options(CertificationOptions, typed)


def _job_spec(mode: Mode, ctx: typer.Context, values: Mapping[str, Any]) -> JobSpec:
    """The job a ``certify`` / ``predict`` command line asks for, resolved as every door resolves it."""
    from apiwrap.adapters import available_vendors
    from apiwrap.engine.jobs import job_spec
    from apiwrap.engine.settings import parse_options, resolve_settings

    vendor = values["vendor"]
    if vendor not in available_vendors():
        _fail(f"unknown vendor {vendor!r}; choose one of {', '.join(available_vendors())}")
    try:
        settings = resolve_settings(_typed_settings(ctx, values), vendor=vendor, mode=mode)
        return job_spec(
            settings,
            parse_options(JobOptions, _fields(JobOptions, values)),
            parse_options(ConnectionOptions, _fields(ConnectionOptions, values)),
            runs_dir=values["runs_dir"],
            vendor_options={"endpoint": values["endpoint"]} if values["endpoint"] else {},
            prices=values["prices"],
            emulate=values["emulate"],
            ray_address=values["ray"],
        )
    except SettingsError as exc:
        _fail_settings(exc)
    except ApiwrapError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")  # _fail raises


def _describe(spec: JobSpec, images: int, emulated: bool) -> str:
    settings = spec.settings
    if settings.mode == "predict":
        samples = f"n={settings.n}"
    else:
        candidate = "the vendor's clean label" if settings.selection == "clean" else "leading selection votes"
        if settings.design == "fixed":
            selection_votes = "" if settings.selection == "clean" else f"n0={settings.n0}, "
            samples = f"{selection_votes}n={settings.n}, candidate: {candidate}"
        else:
            goal = f"radius >= {settings.target_radius}" if settings.design == "target" else "best radius"
            samples = (
                f"sequential ({goal}, <= {settings.max_queries} estimation queries, candidate: {candidate})"
            )
    return (
        f"{settings.mode} {images} image(s) at vendor [bold]{escape(settings.vendor)}[/bold], "
        f"sigma={settings.sigma:g}, {samples}, alpha={settings.alpha:g}, "
        f"denoiser [bold]{escape(settings.denoiser)}[/bold]; "
        f"journal {escape(str(spec.runs_dir / spec.job))}.sqlite"
        + (" (vendor emulated on 127.0.0.1)" if emulated else "")
    )


def _row(job: str, settings: CertificationSettings, result: ImageResult) -> dict[str, Any]:
    """One JSONL line: the job and the settings that produced the result, then the result."""
    return {"job": job, **settings.row(), **result.to_json()}


def _spend_usd(micro_usd: int) -> str:
    """Dollars as an exact decimal string (JSON has no decimal type), as the CSV writes them."""
    from apiwrap.budgets import from_micro_usd

    return str(from_micro_usd(micro_usd))


def _run(mode: Mode, ctx: typer.Context, values: Mapping[str, Any]) -> None:
    from apiwrap.cli.progress import ImageSpend, JobProgress, resume_command, tally
    from apiwrap.engine.images import find_images
    from apiwrap.engine.jobs import journal_path, run_job

    files = find_images(values["images"])
    if not files:
        _fail("no images found (looked for .png, .jpg, .jpeg, .webp)")
    spec = _job_spec(mode, ctx, values)
    settings = spec.settings
    journal = journal_path(spec.runs_dir, spec.job)
    console.print(_describe(spec, len(files), values["emulate"]))
    try:
        before = tally(journal)
    except (ApiwrapError, OSError) as exc:
        _fail(str(exc))
    progress = JobProgress(
        console,
        label=mode,
        images=len(files),
        queries_per_image=settings.queries_per_image,
        before=before,
        max_usd=spec.max_usd,
        stdout=out,
    )
    try:
        # Each image's line is written as soon as the image is done: a long job's finished
        # images are readable (and kept) before the last one ends.
        with (
            progress,
            contextlib.closing(ImageSpend(journal)) as spend,
            _jsonl(values["out"]) as jsonl,
        ):

            def finished(result: ImageResult) -> None:
                progress.image_finished(result)
                _print_line(result, progress.print_line)
                if jsonl is not None:
                    row = _row(spec.job, settings, result) | {
                        "spend_usd": _spend_usd(spend.micro_usd(result.image))
                    }
                    jsonl.write(json.dumps(row) + "\n")
                    jsonl.flush()

            report = asyncio.run(
                run_job(
                    spec,
                    [(_image_name(f, before.image_names), f) for f in files],
                    on_query=progress.query_answered,
                    on_result=finished,
                    on_request=progress.request_finished,
                )
            )
    except (ApiwrapError, OSError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(progress, journal, resume_command(ctx, spec.job))
    _print_report(report, sigma=settings.sigma, emulated=values["emulate"])
    if values["report"] is not None:
        _write_job_reports(report.journal, values["report"])
    raise typer.Exit(_exit_code(report))


def _image_name(file: Path, journaled: frozenset[str]) -> str:
    """The name the journal keeps for ``file``: its absolute path, so a report or a resume finds it
    from any folder; a journal that already holds the path as typed (older jobs) keeps that."""
    return str(file) if str(file) in journaled else str(file.resolve())


def _interrupted(progress: JobProgress, journal: Path, resume: str) -> None:
    """Ctrl-C: what the journal holds (every answered vote is kept) and the command that resumes."""
    from apiwrap.budgets import format_usd
    from apiwrap.cli.progress import tally

    held = tally(journal)
    this_run = held.answered - progress.before.answered
    console.print(
        f"[yellow]interrupted[/yellow]: {held.answered} queries answered "
        f"({this_run} in this run), {format_usd(held.spent_micro_usd)} spent; "
        f"journal {escape(str(journal))}. Resume, re-buying nothing, with:",
        soft_wrap=True,
    )
    console.print(escape(resume), soft_wrap=True)
    raise typer.Exit(ExitCode.INTERRUPTED)


@contextlib.contextmanager
def _results_file(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it only once written in full, so a refused or
    interrupted run leaves the previous file as it was. Mode 0600, as mkstemp makes it: results
    name the user's images and what the vendor said about them."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _jsonl(path: Path | None) -> Iterator[TextIO | None]:
    """The JSON lines output at ``path`` (None: no output), through :func:`_results_file`."""
    if path is None:
        yield None
        return
    with _results_file(path) as temporary, temporary.open("w") as handle:
        yield handle


def _write_job_reports(journal: Path, directory: Path) -> None:
    """The job's HTML, CSV and (certify jobs) PNG report in ``directory``, named after the job."""
    from apiwrap.reports import load_job, write_csv, write_html, write_png

    try:
        directory.mkdir(parents=True, exist_ok=True)
        job = load_job(journal)
        written = [directory / f"{job.name}.html", directory / f"{job.name}.csv"]
        with _results_file(written[0]) as html:
            write_html(job, html)
        with _results_file(written[1]) as csv:
            write_csv(job, csv)
        if job.settings.mode == "certify":
            written.append(directory / f"{job.name}.png")
            with _results_file(written[2]) as png:
                write_png([job], png)
    except (ApiwrapError, OSError) as exc:
        _fail(f"report not written: {exc}")
    console.print("report: " + escape(", ".join(str(path) for path in written)))


def _print_line(result: ImageResult, show: Callable[[str], None] = out.print) -> None:
    # Names, labels and errors come from the user's files and the vendor: never markup.
    name = escape(Path(result.image).name)
    if result.status == "failed":
        show(f"{name}: [red]FAILED[/red] {escape(str(result.error))}")
        return
    if result.status == "budget":
        bought = f"; {result.estimation_votes} estimation votes bought" if result.estimation_votes else ""
        show(f"{name}: [yellow]UNFUNDED[/yellow] (budget exhausted{bought}; {result.queries} queries)")
        return
    label, clean = escape(str(result.label)), escape(str(result.reference_label))
    agree = (
        ""
        if result.reference_label is None
        else ("  = clean" if result.label == result.reference_label else "")
    )
    votes = f"{result.votes_for_candidate}/{result.estimation_votes} votes"
    if result.status == "certified":
        verdict = f"[green]{label}[/green] radius {result.radius:.3f}{agree}"
    elif result.status == "predicted":
        verdict = f"[green]{label}[/green]{agree}"
    else:
        verdict = (
            f"[yellow]ABSTAIN[/yellow] ({escape(str(result.abstain_reason))}; "
            f"candidate {escape(str(result.candidate))})"
        )
    versions = escape(str(result.model_versions))
    drift = f"  [red]model versions {versions}[/red]" if len(result.model_versions) > 1 else ""
    show(f"{name}: {verdict}  {votes}, {result.queries} queries, clean: {clean}{drift}")


def _print_report(report: JobReport, *, sigma: float, emulated: bool = False) -> None:
    from apiwrap.budgets import format_usd

    spaces = {r.certified_space for r in report.results if r.certified_space}
    for space in sorted(spaces):
        out.print(f"Radii are L2 distances in the image space of {space}.")
    _print_summary(report.results, sigma)
    failed = [r for r in report.results if r.status == "failed"]
    skipped = [r for r in report.results if r.status == "budget"]
    spent, possibly = report.budget.spent, report.budget.possibly_billed
    unsure = f" ({possibly.queries} possibly billed: timed out)" if possibly.queries else ""
    out.print(
        f"{report.requests} requests, {report.retries} retries, {report.throttled} throttled; "
        f"spent {format_usd(spent.micro_usd)} for {spent.queries} billable queries{unsure}"
        f"{' at list price (emulated vendor: nothing billed)' if emulated else ''}; "
        f"{report.seconds:.1f} s; journal {escape(str(report.journal))}"
    )
    if report.allocation is not None:
        _print_spending(report)
    if failed:
        out.print(
            f"[red]{len(failed)} image(s) failed[/red]: "
            + escape(", ".join(Path(r.image).name for r in failed))
        )
    if skipped:
        out.print(
            f"[yellow]budget exhausted: {len(skipped)} image(s) left unfunded[/yellow]: "
            + escape(", ".join(Path(r.image).name for r in skipped))
        )
    if report.unanswered_in_flight:
        out.print(
            f"{report.unanswered_in_flight} queries were in flight when an earlier run stopped: counted "
            "as billed and re-sent, so up to that many may have been billed twice."
        )
    if report.aborted is not None:
        out.print(f"[red]job aborted[/red]: {escape(report.aborted)}")


def _print_spending(report: JobReport) -> None:
    from apiwrap.statistics.summary import spending

    assert report.allocation is not None
    table = Table(
        title=f"What the budget bought (likely certificates funded first, {report.allocation.rounds} "
        f"allocation round{'s' if report.allocation.rounds != 1 else ''})"
    )
    for column in ("outcome", "images", "queries", "queries per image"):
        table.add_column(column, justify="left" if column == "outcome" else "right")
    for row in spending(report.results):
        table.add_row(row.outcome, str(row.images), str(row.queries), f"{row.queries / row.images:.1f}")
    out.print(table)


def _print_summary(results: Sequence[ImageResult], sigma: float) -> None:
    from apiwrap.statistics.radii import report_radii
    from apiwrap.statistics.summary import certified_accuracy

    rows = certified_accuracy(results, report_radii(sigma))
    if not rows or rows[0].images == 0:
        return
    left_out = sum(r.status in {"failed", "budget"} for r in results)
    table = Table(
        title="Certified accuracy (agreement with the vendor's clean label; every image counts"
        + (f", {left_out} failed or unfunded among them)" if left_out else ")")
    )
    table.add_column("radius", justify="right")
    table.add_column("certified", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("95% interval", justify="right")
    for row in rows:
        table.add_row(
            f"{row.radius:g}",
            f"{row.certified}/{row.images}",
            f"{row.accuracy:.1%}",
            f"{row.low:.1%} - {row.high:.1%}",
        )
    out.print(table)


@app.command()
def certify(
    ctx: typer.Context,
    images: ImagesArg,
    vendor: VendorOpt = "local",
    endpoint: EndpointOpt = None,
    sigma: SigmaOpt = SETTINGS.sigma,
    n0: N0Opt = SETTINGS.n0,
    n: NOpt = SETTINGS.n,
    alpha: AlphaOpt = SETTINGS.alpha,
    seed: SeedOpt = SETTINGS.seed,
    denoiser: DenoiserOpt = SETTINGS.denoiser,
    size: SizeOpt = SETTINGS.size,
    out: OutOpt = None,
    job: JobOpt = RUN.job,
    runs_dir: RunsOpt = Path("runs"),
    max_usd: MaxUsdOpt = None,
    max_job_queries: MaxJobQueriesOpt = RUN.max_job_queries,
    tps: TpsOpt = CONNECTION.tps,
    concurrency: ConcurrencyOpt = CONNECTION.concurrency,
    max_attempts: AttemptsOpt = CONNECTION.max_attempts,
    request_timeout: RequestTimeoutOpt = CONNECTION.request_timeout,
    prices: PricesOpt = None,
    force_denoiser: ForceOpt = RUN.force_denoiser,
    emulate: EmulateOpt = False,
    target_radius: TargetRadiusOpt = SETTINGS.target_radius,
    max_queries: MaxQueriesOpt = SETTINGS.max_queries,
    selection: SelectionOpt = SETTINGS.selection,
    futility: FutilityOpt = SETTINGS.futility,
    allocate: AllocateOpt = RUN.allocate,
    report: ReportDirOpt = None,
    ray: RayOpt = None,
) -> None:
    """Certify each image's label with an L2 radius (Cohen's CERTIFY), or abstain.

    With --target-radius or --max-queries, a sequential test stops each image as soon as
    its votes decide, with the same 1 - alpha guarantee. Under a budget, the sequential tests
    of all images share it: likely certificates are funded first.
    """
    _run("certify", ctx, locals())


@app.command()
def predict(
    ctx: typer.Context,
    images: ImagesArg,
    vendor: VendorOpt = "local",
    endpoint: EndpointOpt = None,
    sigma: SigmaOpt = SETTINGS.sigma,
    n: NOpt = SETTINGS.n,
    alpha: AlphaOpt = SETTINGS.alpha,
    seed: SeedOpt = SETTINGS.seed,
    denoiser: DenoiserOpt = SETTINGS.denoiser,
    size: SizeOpt = SETTINGS.size,
    out: OutOpt = None,
    job: JobOpt = RUN.job,
    runs_dir: RunsOpt = Path("runs"),
    max_usd: MaxUsdOpt = None,
    max_job_queries: MaxJobQueriesOpt = RUN.max_job_queries,
    tps: TpsOpt = CONNECTION.tps,
    concurrency: ConcurrencyOpt = CONNECTION.concurrency,
    max_attempts: AttemptsOpt = CONNECTION.max_attempts,
    request_timeout: RequestTimeoutOpt = CONNECTION.request_timeout,
    prices: PricesOpt = None,
    force_denoiser: ForceOpt = RUN.force_denoiser,
    emulate: EmulateOpt = False,
    report: ReportDirOpt = None,
    ray: RayOpt = None,
) -> None:
    """Predict the smoothed classifier's label (Cohen's PREDICT), or abstain."""
    _run("predict", ctx, locals())


#: Agreements (the share of noisy copies the vendor labels as the candidate) at which estimate
#: shows a sequential design's expected cost.
ESTIMATE_AGREEMENTS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)


@app.command()
def estimate(
    ctx: typer.Context,
    images: ImagesArg,
    vendor: VendorOpt = "local",
    mode: Annotated[Mode, typer.Option(help="certify or predict.")] = "certify",
    sigma: SigmaOpt = SETTINGS.sigma,
    n0: N0Opt = SETTINGS.n0,
    n: NOpt = SETTINGS.n,
    target_radius: TargetRadiusOpt = SETTINGS.target_radius,
    max_queries: MaxQueriesOpt = SETTINGS.max_queries,
    selection: SelectionOpt = SETTINGS.selection,
    futility: FutilityOpt = SETTINGS.futility,
    agreement_prior: Annotated[
        str | None,
        typer.Option(
            metavar="A,B",
            help="Sequential designs: also the expected cost when the images' agreement is spread as "
            "Beta(A, B).",
        ),
    ] = None,
    max_attempts: AttemptsOpt = CONNECTION.max_attempts,
    prices: PricesOpt = None,
) -> None:
    """Print the expected and worst-case cost of a job before running it.

    The settings are resolved as certify and predict resolve them (design, sigma, selection).
    A sequential design's expected cost comes from its own stopping rule (futility included),
    at several agreements of the vendor with the candidate, and optionally under a prior.
    """
    from apiwrap.budgets import PriceTable
    from apiwrap.budgets import estimate as budget_estimate
    from apiwrap.engine.images import find_images
    from apiwrap.engine.settings import parse_options, resolve_settings

    files = find_images(images)
    try:
        settings = resolve_settings(_typed_settings(ctx, locals()), vendor=vendor, mode=mode)
        connection = parse_options(ConnectionOptions, {"max_attempts": max_attempts})
        prior = None if agreement_prior is None else _beta_prior(agreement_prior)
        table = PriceTable.load(prices) if prices else PriceTable.default()
        cost = budget_estimate(table, vendor, len(files), settings.queries_per_image, connection.max_attempts)
    except SettingsError as exc:
        _fail_settings(exc)
    except ApiwrapError as exc:
        _fail(str(exc))
    if prior is not None and settings.design == "fixed":
        _fail("--agreement-prior: the fixed design buys the same queries whatever the agreement")
    design = "fixed design" if settings.design == "fixed" else f"{settings.design} design, at its cap"
    table_out = Table(
        title=f"Cost of {mode} on {len(files)} image(s) at {escape(vendor)} ({design}: "
        f"{settings.queries_per_image} queries per image at most)"
    )
    table_out.add_column("")
    table_out.add_column("", justify="right")
    for label, value in cost.rows():
        table_out.add_row(label, value)
    out.print(table_out)
    if settings.design != "fixed":
        _print_sequential_estimate(settings, len(files), table, connection.max_attempts, prior)


def _beta_prior(text: str) -> tuple[float, float]:
    import math

    parts = text.split(",")
    try:
        a, b = (float(part) for part in parts)
    except ValueError:
        a = b = math.nan
    if len(parts) != 2 or not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        raise SettingsError([("agreement_prior", f"must be A,B with finite A, B > 0 (got {text!r})")])
    return a, b


def _print_sequential_estimate(
    settings: CertificationSettings,
    images: int,
    prices: Any,
    max_attempts: int,
    prior: tuple[float, float] | None,
) -> None:
    import math

    from apiwrap.budgets import estimate as budget_estimate
    from apiwrap.budgets import format_usd
    from apiwrap.statistics.cost import prior_profile, stopping_profile
    from apiwrap.statistics.procedures import design_of

    design = design_of(settings)
    # The clean query, and selection votes counted at their cap n0.
    overhead = settings.queries_per_image - settings.max_queries
    profiles = [(f"{p:g}", stopping_profile(design, p)) for p in ESTIMATE_AGREEMENTS]
    if prior is not None:
        profiles.append((f"Beta({prior[0]:g}, {prior[1]:g})", prior_profile(design, *prior)))
    goal = f"radius >= {settings.target_radius:g}" if settings.design == "target" else "any radius"
    table_out = Table(
        title=f"Expected cost from the design's stopping rule (futility {settings.futility:g}; "
        f"{overhead} quer{'y' if overhead == 1 else 'ies'} per image before estimation; certified: {goal})"
    )
    for column in (
        "agreement",
        "queries per image",
        "most per image",
        "certified",
        "expected cost",
    ):
        table_out.add_column(column, justify="right")
    for label, profile in profiles:
        per_image = overhead + profile.expected_votes
        batch = budget_estimate(prices, settings.vendor, 1, math.ceil(images * per_image), max_attempts)
        table_out.add_row(
            label,
            f"{per_image:.1f}",
            str(overhead + profile.most_votes),
            f"{profile.certified:.0%}",
            format_usd(batch.expected_micro_usd),
        )
    out.print(table_out)


@app.command()
def replay(
    job: Annotated[str, typer.Argument(help="Job name (or path to its journal).")],
    runs_dir: RunsOpt = Path("runs"),
    n0: Annotated[
        int | None, typer.Option("--n0", help="Selection samples to use (default: the job's).")
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Estimation samples to use (default: the job's).")
    ] = None,
    alpha: Annotated[float | None, typer.Option(help="Failure probability (default: the job's).")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write one JSON line per image here (marked as a replay).")
    ] = None,
) -> None:
    """Re-certify a job from its journal, sending no query.

    Fewer samples than the job bought can be used (the first n0 as selection, the next n
    as estimation); more cannot.
    """
    from apiwrap.engine.jobs import journal_path
    from apiwrap.engine.replay import journal_settings, replay_journal
    from apiwrap.statistics.settings import CertificationSettings

    try:
        path = Path(job) if job.endswith(".sqlite") else journal_path(runs_dir, job)
        replayed = replay_journal(path, n0=n0, n=n, alpha=alpha)
        sigma = journal_settings(path).sigma
    except ApiwrapError as exc:
        _fail(str(exc))
    changes = ", ".join(
        f"{name}={values['replay']} (the job's: {values['job']})" for name, values in replayed.changed.items()
    )
    if changes:
        # Another alpha or n is another experiment: say so wherever its radii are read.
        out.print(f"[yellow]NOT THE JOB'S PARAMETERS[/yellow]: replayed with {changes}")
    for result in replayed.results:
        _print_line(result)
    if out_file:
        marker = {"parameters": replayed.parameters, "changed": replayed.changed}
        settings = CertificationSettings(**replayed.parameters)
        try:
            with _jsonl(out_file) as handle:
                assert handle is not None
                for result in replayed.results:
                    handle.write(json.dumps(_row(path.stem, settings, result) | {"replay": marker}) + "\n")
        except OSError as exc:
            _fail(str(exc))
    _print_summary(replayed.results, sigma)
    bought = sum(result.queries for result in replayed.results)
    out.print(f"Replayed from the journal: no query sent; the job bought {bought} queries.")
    if changes:
        out.print(f"[yellow]Radii above use {changes}, not the job's parameters.[/yellow]")


@app.command("report")
def report_command(
    jobs: Annotated[list[str], typer.Argument(metavar="JOB", help="Job names or journal paths.")],
    runs_dir: RunsOpt = Path("runs"),
    html: Annotated[Path | None, typer.Option(help="Write the job's self-contained HTML page here.")] = None,
    csv: Annotated[Path | None, typer.Option(help="Write one CSV row per image here.")] = None,
    png: Annotated[
        Path | None, typer.Option(help="Plot certified accuracy against radius (several jobs: one plot).")
    ] = None,
    samples: Annotated[
        bool,
        typer.Option(
            "--samples/--no-samples",
            help="Show three rebuilt noisy copies per image in the HTML (about 86 KB an image); "
            "--no-samples leaves them out and loads no denoiser.",
        ),
    ] = True,
) -> None:
    """Write a job's report (HTML, CSV, PNG) from its journal, sending no query.

    The HTML shows the source images and noisy copies when the image files are where the job
    read them (the journal keeps their absolute paths); otherwise it says so and shows none.
    """
    from apiwrap.engine.jobs import journal_path
    from apiwrap.engine.journal import Journal
    from apiwrap.reports import load_job, write_csv, write_html, write_png

    if html is None and csv is None and png is None:
        _fail("nothing to write: give --html FILE, --csv FILE and/or --png FILE")
    if len(jobs) > 1 and (html is not None or csv is not None):
        _fail("--html and --csv report one job; --png compares several")
    try:
        paths = [Path(job) if job.endswith(".sqlite") else journal_path(runs_dir, job) for job in jobs]
        for path in paths:
            # a report is read as evidence: its journal must be as apiwrap wrote it
            Journal.open_existing(path, check_rows=True).close()
        loaded = [load_job(path) for path in paths]
        if html is not None:
            with _results_file(html) as temporary:
                write_html(loaded[0], temporary, copies=3 if samples else 0)
        if csv is not None:
            with _results_file(csv) as temporary:
                write_csv(loaded[0], temporary)
        if png is not None:
            with _results_file(png) as temporary:
                write_png(loaded, temporary)
    except (ApiwrapError, OSError) as exc:
        _fail(str(exc))
    console.print("wrote " + escape(", ".join(str(path) for path in (html, csv, png) if path is not None)))


app.command("jobs")(list_jobs)
app.command("show")(show_job)
app.command("train-denoiser")(train_denoiser)
app.command("eval-denoiser")(eval_denoiser)
app.command("emulate")(emulate)
app.command("serve")(serve)
readable_help(app)
app.command("verify")(verify)
