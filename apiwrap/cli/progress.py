"""The live progress of a ``certify`` / ``predict`` job, and the command that resumes one.

The display counts what the job holds, not only what this run did: a resumed job starts at
the queries its journal already answered (shown as reused) and the money already spent, so
its bar ends at the job's total instead of restarting at zero.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from apiwrap.budgets import format_usd, to_micro_usd

if TYPE_CHECKING:
    from types import TracebackType

    import typer

    from apiwrap.engine.journal import Journal
    from apiwrap.engine.scheduler import RequestOutcome
    from apiwrap.statistics.procedures import ImageResult

__all__ = ["ImageSpend", "JobProgress", "JournalTally", "resume_command", "tally"]


@dataclass(frozen=True)
class JournalTally:
    """What a job's journal holds: answered queries, the money its ledger counts as spent, and
    the names of its images."""

    answered: int
    spent_micro_usd: int
    image_names: frozenset[str] = frozenset()


def tally(journal: Path) -> JournalTally:
    """The tally of the journal at ``journal``; a job that has none yet holds nothing."""
    from apiwrap.engine.journal import Journal

    if not journal.exists():
        return JournalTally(0, 0)
    # Every seal checked before the job starts: a damaged journal is refused here, by name.
    opened = Journal.open_existing(journal, check_rows=True)
    try:
        images = opened.images()
        answered = sum(len(opened.answered(image.image_id)) for image in images)
        return JournalTally(answered, opened.spent()[0], frozenset(image.name for image in images))
    finally:
        opened.close()


class ImageSpend:
    """Each finished image's spend as the job's ledger has it, read while the job runs (the
    journal is SQLite in WAL mode: a second connection reads what the job has committed)."""

    def __init__(self, journal: Path) -> None:
        self._path = journal
        self._journal: Journal | None = None
        self._ids: dict[str, int] = {}

    def micro_usd(self, image: str) -> int:
        from apiwrap.engine.journal import Journal

        if self._journal is None:
            self._journal = Journal.open_existing(self._path)
        if image not in self._ids:
            self._ids = {row.name: row.image_id for row in self._journal.images()}
        return self._journal.billed_by_image().get(self._ids[image], 0)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()


class _Status(ProgressColumn):
    """images done / total, queries (reused), rate, time left, money against the cap."""

    def __init__(self, max_micro_usd: int | None) -> None:
        super().__init__()
        self._cap = f" of {format_usd(max_micro_usd)}" if max_micro_usd is not None else ""

    def render(self, task: Task) -> Text:
        fields = task.fields
        elapsed = max(time.monotonic() - fields["started"], 1e-9)
        answered_now = int(task.completed) - fields["reused"]
        rate = answered_now / elapsed
        left = max(int(task.total or 0) - int(task.completed), 0)
        eta = "--:--" if rate <= 0 else _clock(left / rate)
        reused = f" ({fields['reused']} reused)" if fields["reused"] else ""
        return Text(
            f"{fields['images_done']}/{fields['images']} images  "
            f"{int(task.completed)}/{int(task.total or 0)} queries{reused}  "
            f"{rate:.1f}/s  ETA {eta}  {format_usd(fields['spent'])}{self._cap}"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class JobProgress:
    """A progress display over one job: feed it ``query_answered``, ``request_finished`` and
    ``image_finished`` (the engine's callbacks)."""

    def __init__(
        self,
        console: Console,
        *,
        label: str,
        images: int,
        queries_per_image: int,
        before: JournalTally,
        max_usd: Decimal | None,
        stdout: Console,
    ) -> None:
        self._queries_per_image = queries_per_image
        self._stdout = stdout
        cap = to_micro_usd(max_usd) if max_usd is not None else None
        self._progress = Progress(
            TextColumn(label),
            BarColumn(bar_width=20),
            _Status(cap),
            console=console,
            redirect_stdout=False,  # stdout is the results': a file stays a file
        )
        self._task = self._progress.add_task(
            label,
            total=images * queries_per_image,
            completed=before.answered,
            reused=before.answered,
            images=images,
            images_done=0,
            spent=before.spent_micro_usd,
            started=time.monotonic(),
        )
        self.before = before
        self.spent_now_micro_usd = 0

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()  # the last state stays on screen: what the job had done

    def print_line(self, markup: str) -> None:
        """A result line on stdout; on a terminal that also shows the display, printed above it
        (Rich redraws a live display only around what its own console prints)."""
        if self._stdout.is_terminal and self._progress.console.is_terminal:
            self._progress.console.print(markup)
        else:
            self._stdout.print(markup)

    def query_answered(self) -> None:
        self._progress.advance(self._task)

    def request_finished(self, outcome: RequestOutcome) -> None:
        self.spent_now_micro_usd += outcome.billed_micro_usd
        self._progress.update(self._task, spent=self.before.spent_micro_usd + self.spent_now_micro_usd)

    def image_finished(self, result: ImageResult) -> None:
        task = self._progress.tasks[self._task]
        # A sequential image that stops early, or a failed one, needs fewer queries than its cap.
        unneeded = max(self._queries_per_image - result.queries, 0)
        self._progress.update(
            self._task, total=(task.total or 0) - unneeded, images_done=task.fields["images_done"] + 1
        )


def resume_command(ctx: typer.Context, job: str) -> str:
    """The command line that resumes this job: what the user typed, with ``--job`` named."""
    words = ["apiwrap", ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if name == "job" or source is None or source.name in {"DEFAULT", "DEFAULT_MAP"}:
            continue
        words += _words(param, ctx.params[name])
    return shlex.join([*words, "--job", job])


def _words(param: Any, value: Any) -> list[str]:
    values = value if isinstance(value, list | tuple) else [value]
    shown = [str(getattr(item, "value", item)) for item in values]
    if param.param_type_name == "argument":
        return shown
    if getattr(param, "is_flag", False):
        if value:
            return [param.opts[0]]
        return [param.secondary_opts[0]] if param.secondary_opts else []
    return [word for item in shown for word in (param.opts[0], item)]
