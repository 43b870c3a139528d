"""The ``apiwrap`` command line: certify, predict, estimate, replay (and the tools of other packages).

Heavy modules (torch, Pillow, SQLite, the engine) are imported inside the commands that use
them, so ``apiwrap --help`` and ``apiwrap replay`` start without torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from apiwrap.cli.denoisers import eval_denoiser, train_denoiser
from apiwrap.cli.emulate import emulate
from apiwrap.cli.serve import serve
from apiwrap.errors import ApiwrapError

if TYPE_CHECKING:
    from apiwrap.engine.jobs import JobReport, JobSpec
    from apiwrap.statistics.procedures import ImageResult, Mode

DEFAULT_SIGMA = 0.25

app = typer.Typer(
    help="Certified labels from black-box vision APIs by denoised randomized smoothing.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
out = Console(soft_wrap=True)

ImagesArg = Annotated[
    list[Path], typer.Argument(help="Image files or folders (PNG, JPEG, WebP).", exists=True)
]
VendorOpt = Annotated[str, typer.Option(help="Vendor adapter: local, aws, google, azure, clarifai, http.")]
EndpointOpt = Annotated[
    str | None, typer.Option(help="Override the vendor's endpoint URL (e.g. an emulator).")
]
SigmaOpt = Annotated[
    float | None,
    typer.Option(
        help="Noise level in [0,1] pixel units. Default 0.25; with --target-radius R, the smallest of "
        "0.12, 0.25, 0.5 that is >= R (docs/denoisers.md)."
    ),
]
N0Opt = Annotated[int, typer.Option("--n0", help="Selection samples (choose the candidate label).")]
NOpt = Annotated[int, typer.Option("--n", help="Estimation samples (fresh, counted for the bound).")]
AlphaOpt = Annotated[float, typer.Option(help="Failure probability per image.")]
SeedOpt = Annotated[int, typer.Option(help="Noise seed.")]
DenoiserOpt = Annotated[
    str,
    typer.Option(
        help="Denoiser name or checkpoint path, 'none', or 'auto': the best installed denoiser for the "
        "sigma (docs/denoisers.md)."
    ),
]
SizeOpt = Annotated[
    int | None,
    typer.Option(help="Resize the shorter side and centre-crop to SIZE first; radii then refer to it."),
]
OutOpt = Annotated[Path | None, typer.Option(help="Write one JSON line per image here.")]
JobOpt = Annotated[str | None, typer.Option(help="Job name; an interrupted job resumes under the same name.")]
RunsOpt = Annotated[Path, typer.Option(help="Folder of job journals.")]
MaxUsdOpt = Annotated[str | None, typer.Option(help="Stop the job before it spends more than this (USD).")]
MaxJobQueriesOpt = Annotated[
    int | None, typer.Option(help="Stop the job before more than this many billable queries.")
]
TargetRadiusOpt = Annotated[
    float | None,
    typer.Option(help="Sequential: decide whether each image is certified at this radius, stopping early."),
]
MaxQueriesOpt = Annotated[
    int | None,
    typer.Option(help="Sequential: cap of estimation queries per image; alone, certifies the best radius."),
]
SelectionOpt = Annotated[
    str,
    typer.Option(
        help="How the candidate is chosen: 'clean' (the vendor's label on the clean image: certifies what "
        "the vendor said, no selection query) or 'leader' (the smoothed classifier's own label: Cohen's n0 "
        "selection votes; sequential designs buy them until one label leads)."
    ),
]
AllocateOpt = Annotated[
    bool,
    typer.Option(
        help="Sequential with --max-usd/--max-job-queries: fund likely certificates first and give up "
        "hopeless images early; --no-allocate spends first come, first served."
    ),
]
TpsOpt = Annotated[float | None, typer.Option(help="Requests per second allowed at the vendor.")]
ConcurrencyOpt = Annotated[int, typer.Option(help="Requests in flight at once.")]
AttemptsOpt = Annotated[int, typer.Option(help="Attempts per query (same bytes each time).")]
PricesOpt = Annotated[Path | None, typer.Option(help="TOML file overriding the price table.", exists=True)]
ForceOpt = Annotated[bool, typer.Option(help="Use a denoiser trained for another sigma.")]
EmulateOpt = Annotated[
    bool, typer.Option(help="Start the vendor's wire-protocol emulator on 127.0.0.1 and certify against it.")
]
ReportDirOpt = Annotated[
    Path | None,
    typer.Option("--report", help="When the job ends, write DIR/JOB.html, .csv and .png (docs/reports.md)."),
]

RayOpt = Annotated[
    str | None,
    typer.Option(
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


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything ``certify`` and ``predict`` were asked for, as one object."""

    mode: Mode
    images: list[Path]
    vendor: str
    endpoint: str | None
    sigma: float | None
    n0: int
    n: int
    alpha: float
    seed: int
    denoiser: str
    size: int | None
    out: Path | None
    job: str | None
    runs_dir: Path
    max_usd: str | None
    max_job_queries: int | None
    tps: float | None
    concurrency: int
    max_attempts: int
    prices: Path | None
    force_denoiser: bool
    emulate: bool
    target_radius: float | None = None
    max_queries: int | None = None
    selection: str = "clean"
    allocate: bool = True
    report_dir: Path | None = None
    ray: str | None = None

    @property
    def design(self) -> str:
        return (
            "target"
            if self.target_radius is not None
            else "best"
            if self.max_queries is not None
            else "fixed"
        )

    @property
    def resolved_sigma(self) -> float:
        """The given sigma, or the rule's choice for the target radius (fixed before any vote)."""
        if self.sigma is not None:
            return self.sigma
        if self.target_radius is not None:
            from apiwrap.denoisers.recommended import recommended_sigma

            return recommended_sigma(self.target_radius)
        return DEFAULT_SIGMA

    def job_spec(self) -> JobSpec:
        """The job these options describe; raises ``ConfigurationError`` for an invalid combination."""
        from apiwrap.budgets import parse_usd
        from apiwrap.denoisers import AUTO, recommended_denoiser
        from apiwrap.engine.distributed import RayOptions, require_ray
        from apiwrap.engine.jobs import JobSpec
        from apiwrap.engine.scheduler import RetryPolicy, VendorLimits
        from apiwrap.statistics.procedures import CertificationSettings

        settings = CertificationSettings(
            vendor=self.vendor,
            sigma=self.resolved_sigma,
            n0=self.n0,
            n=self.n,
            alpha=self.alpha,
            seed=self.seed,
            denoiser=recommended_denoiser(self.resolved_sigma) if self.denoiser == AUTO else self.denoiser,
            size=self.size,
            mode=self.mode,
            design=self.design,  # type: ignore[arg-type]
            target_radius=self.target_radius,
            max_queries=self.max_queries or 400,
            selection=self.selection,  # type: ignore[arg-type]
        )
        if self.ray is not None:
            require_ray()  # a missing extra is named before any journal is opened
        return JobSpec(
            settings=settings,
            job=self.job or datetime.datetime.now().strftime(f"{self.mode}-%Y%m%d-%H%M%S"),
            runs_dir=self.runs_dir,
            vendor_options={"endpoint": self.endpoint} if self.endpoint else {},
            limits=VendorLimits(requests_per_second=self.tps, concurrency=self.concurrency),
            retry=RetryPolicy(max_attempts=self.max_attempts),
            max_usd=parse_usd(self.max_usd) if self.max_usd else None,
            max_queries=self.max_job_queries,
            prices=self.prices,
            force_denoiser=self.force_denoiser,
            emulate=self.emulate,
            allocate=self.allocate,
            ray=RayOptions(address=self.ray) if self.ray is not None else None,
        )


def _run(options: RunOptions) -> None:
    from apiwrap.adapters import available_vendors
    from apiwrap.engine.images import find_images
    from apiwrap.engine.jobs import run_job

    files = find_images(options.images)
    if not files:
        _fail("no images found (looked for .png, .jpg, .jpeg, .webp)")
    if options.vendor not in available_vendors():
        _fail(f"unknown vendor {options.vendor!r}; choose one of {', '.join(available_vendors())}")
    try:
        spec = options.job_spec()
    except ApiwrapError as exc:
        _fail(str(exc))
    settings = spec.settings
    total = len(files) * settings.queries_per_image
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
    console.print(
        f"{settings.mode} {len(files)} image(s) at vendor [bold]{settings.vendor}[/bold], "
        f"sigma={settings.sigma:g}, {samples}, alpha={settings.alpha:g}, "
        f"denoiser [bold]{settings.denoiser}[/bold]; journal {spec.runs_dir / spec.job}.sqlite"
        + (" (vendor emulated on 127.0.0.1)" if options.emulate else "")
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("queries", total=total)
        try:
            # Each image's line is written as soon as the image is done: a long job's finished
            # images are readable (and kept) before the last one ends.
            with options.out.open("w") if options.out else _no_output() as jsonl:

                def stream(result: ImageResult) -> None:
                    if jsonl is not None:
                        jsonl.write(json.dumps(result.to_json()) + "\n")
                        jsonl.flush()

                report = asyncio.run(
                    run_job(
                        spec,
                        [(str(f), f) for f in files],
                        on_query=lambda: progress.advance(task),
                        on_result=stream,
                    )
                )
        except (ApiwrapError, OSError) as exc:
            _fail(str(exc))
    _print_report(report, sigma=settings.sigma, emulated=options.emulate)
    if options.report_dir is not None:
        _write_job_reports(report.journal, options.report_dir)
    raise typer.Exit(_exit_code(report))


@contextlib.contextmanager
def _no_output() -> Iterator[None]:
    yield None


def _write_job_reports(journal: Path, directory: Path) -> None:
    """The job's HTML, CSV and (certify jobs) PNG report in ``directory``, named after the job."""
    from apiwrap.reports import load_job, write_csv, write_html, write_png

    try:
        directory.mkdir(parents=True, exist_ok=True)
        job = load_job(journal)
        written = [directory / f"{job.name}.html", directory / f"{job.name}.csv"]
        write_html(job, written[0])
        write_csv(job, written[1])
        if job.settings.mode == "certify":
            write_png([job], directory / f"{job.name}.png")
            written.append(directory / f"{job.name}.png")
    except (ApiwrapError, OSError) as exc:
        _fail(f"report not written: {exc}")
    console.print("report: " + ", ".join(str(path) for path in written))


def _print_line(result: ImageResult) -> None:
    name = Path(result.image).name
    if result.status == "failed":
        out.print(f"{name}: [red]FAILED[/red] {result.error}")
        return
    if result.status == "budget":
        bought = f"; {result.estimation_votes} estimation votes bought" if result.estimation_votes else ""
        out.print(f"{name}: [yellow]NOT CERTIFIED[/yellow] (budget exhausted{bought})")
        return
    agree = (
        ""
        if result.reference_label is None
        else ("  = clean" if result.label == result.reference_label else "")
    )
    votes = f"{result.votes_for_candidate}/{result.estimation_votes} votes"
    if result.status == "certified":
        verdict = f"[green]{result.label}[/green] radius {result.radius:.3f}{agree}"
    elif result.status == "predicted":
        verdict = f"[green]{result.label}[/green]{agree}"
    else:
        verdict = f"[yellow]ABSTAIN[/yellow] ({result.abstain_reason}; candidate {result.candidate})"
    drift = f"  [red]model versions {result.model_versions}[/red]" if len(result.model_versions) > 1 else ""
    out.print(f"{name}: {verdict}  {votes}, {result.queries} queries, clean: {result.reference_label}{drift}")


def _print_report(report: JobReport, *, sigma: float, emulated: bool = False) -> None:
    from apiwrap.budgets import format_usd

    for result in report.results:
        _print_line(result)
    spaces = {r.certified_space for r in report.results if r.certified_space}
    for space in sorted(spaces):
        out.print(f"Radii are L2 distances in the image space of {space}.")
    _print_summary(report.results, sigma)
    failed = [r for r in report.results if r.status == "failed"]
    skipped = [r for r in report.results if r.status == "budget"]
    spent = report.budget.spent
    out.print(
        f"{report.requests} requests, {report.retries} retries, {report.throttled} throttled; "
        f"spent {format_usd(spent.micro_usd)} for {spent.queries} billable queries"
        f"{' at list price (emulated vendor: nothing billed)' if emulated else ''}; "
        f"{report.seconds:.1f} s; journal {report.journal}"
    )
    if report.allocation is not None:
        _print_spending(report)
    if failed:
        out.print(
            f"[red]{len(failed)} image(s) failed[/red]: " + ", ".join(Path(r.image).name for r in failed)
        )
    if skipped:
        out.print(
            f"[yellow]budget exhausted: {len(skipped)} image(s) left uncertified[/yellow]: "
            + ", ".join(Path(r.image).name for r in skipped)
        )
    if report.unanswered_in_flight:
        out.print(
            f"{report.unanswered_in_flight} queries were in flight when an earlier run stopped: counted "
            "as billed and re-sent, so up to that many may have been billed twice."
        )
    if report.aborted is not None:
        out.print(f"[red]job aborted[/red]: {report.aborted}")


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
    images: ImagesArg,
    vendor: VendorOpt = "local",
    endpoint: EndpointOpt = None,
    sigma: SigmaOpt = None,
    n0: N0Opt = 20,
    n: NOpt = 100,
    alpha: AlphaOpt = 0.001,
    seed: SeedOpt = 0,
    denoiser: DenoiserOpt = "auto",
    size: SizeOpt = None,
    out: OutOpt = None,
    job: JobOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    max_usd: MaxUsdOpt = None,
    max_job_queries: MaxJobQueriesOpt = None,
    tps: TpsOpt = None,
    concurrency: ConcurrencyOpt = 8,
    max_attempts: AttemptsOpt = 6,
    prices: PricesOpt = None,
    force_denoiser: ForceOpt = False,
    emulate: EmulateOpt = False,
    target_radius: TargetRadiusOpt = None,
    max_queries: MaxQueriesOpt = None,
    selection: SelectionOpt = "clean",
    allocate: AllocateOpt = True,
    report: ReportDirOpt = None,
    ray: RayOpt = None,
) -> None:
    """Certify each image's label with an L2 radius (Cohen's CERTIFY), or abstain.

    With --target-radius or --max-queries, a sequential test stops each image as soon as
    its votes decide, with the same 1 - alpha guarantee. Under a budget, the sequential tests
    of all images share it: likely certificates are funded first.
    """
    _run(
        RunOptions(
            "certify",
            images,
            vendor,
            endpoint,
            sigma,
            n0,
            n,
            alpha,
            seed,
            denoiser,
            size,
            out,
            job,
            runs_dir,
            max_usd,
            max_job_queries,
            tps,
            concurrency,
            max_attempts,
            prices,
            force_denoiser,
            emulate,
            target_radius=target_radius,
            max_queries=max_queries,
            selection=selection,
            allocate=allocate,
            report_dir=report,
            ray=ray,
        )
    )


@app.command()
def predict(
    images: ImagesArg,
    vendor: VendorOpt = "local",
    endpoint: EndpointOpt = None,
    sigma: SigmaOpt = None,
    n: NOpt = 100,
    alpha: AlphaOpt = 0.001,
    seed: SeedOpt = 0,
    denoiser: DenoiserOpt = "auto",
    size: SizeOpt = None,
    out: OutOpt = None,
    job: JobOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    max_usd: MaxUsdOpt = None,
    max_job_queries: MaxJobQueriesOpt = None,
    tps: TpsOpt = None,
    concurrency: ConcurrencyOpt = 8,
    max_attempts: AttemptsOpt = 6,
    prices: PricesOpt = None,
    force_denoiser: ForceOpt = False,
    emulate: EmulateOpt = False,
    report: ReportDirOpt = None,
    ray: RayOpt = None,
) -> None:
    """Predict the smoothed classifier's label (Cohen's PREDICT), or abstain."""
    _run(
        RunOptions(
            "predict",
            images,
            vendor,
            endpoint,
            sigma,
            0,
            n,
            alpha,
            seed,
            denoiser,
            size,
            out,
            job,
            runs_dir,
            max_usd,
            max_job_queries,
            tps,
            concurrency,
            max_attempts,
            prices,
            force_denoiser,
            emulate,
            report_dir=report,
            ray=ray,
        )
    )


@app.command()
def estimate(
    images: ImagesArg,
    vendor: VendorOpt = "local",
    n0: N0Opt = 20,
    n: NOpt = 100,
    mode: Annotated[str, typer.Option(help="certify or predict.")] = "certify",
    selection: SelectionOpt = "clean",
    max_attempts: AttemptsOpt = 6,
    prices: PricesOpt = None,
) -> None:
    """Print the expected and worst-case cost of a job before running it."""
    from apiwrap.budgets import PriceTable
    from apiwrap.budgets import estimate as budget_estimate
    from apiwrap.engine.images import find_images
    from apiwrap.statistics.procedures import CertificationSettings

    files = find_images(images)
    try:
        settings = CertificationSettings(
            vendor=vendor, n0=n0 if mode == "certify" else 0, n=n, mode=mode, selection=selection
        )  # type: ignore[arg-type]
        table = PriceTable.load(prices) if prices else PriceTable.default()
        cost = budget_estimate(table, vendor, len(files), settings.queries_per_image, max_attempts)
    except ApiwrapError as exc:
        _fail(str(exc))
    table_out = Table(title=f"Cost of {mode} on {len(files)} image(s) at {vendor}")
    table_out.add_column("")
    table_out.add_column("", justify="right")
    for label, value in cost.rows():
        table_out.add_row(label, value)
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
        with out_file.open("w") as handle:
            for result in replayed.results:
                handle.write(json.dumps(result.to_json() | {"replay": marker}) + "\n")
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
) -> None:
    """Write a job's report (HTML, CSV, PNG) from its journal, sending no query.

    The HTML shows the source images and noisy copies when the image files are where the job
    read them (names are paths as given to certify); otherwise it says so and shows none.
    """
    from apiwrap.engine.jobs import journal_path
    from apiwrap.reports import load_job, write_csv, write_html, write_png

    if html is None and csv is None and png is None:
        _fail("nothing to write: give --html FILE, --csv FILE and/or --png FILE")
    if len(jobs) > 1 and (html is not None or csv is not None):
        _fail("--html and --csv report one job; --png compares several")
    try:
        loaded = [
            load_job(Path(job) if job.endswith(".sqlite") else journal_path(runs_dir, job)) for job in jobs
        ]
        if html is not None:
            write_html(loaded[0], html)
        if csv is not None:
            write_csv(loaded[0], csv)
        if png is not None:
            write_png(loaded, png)
    except (ApiwrapError, OSError) as exc:
        _fail(str(exc))
    console.print("wrote " + ", ".join(str(path) for path in (html, csv, png) if path is not None))


app.command("train-denoiser")(train_denoiser)
app.command("eval-denoiser")(eval_denoiser)
app.command("emulate")(emulate)
app.command("serve")(serve)
