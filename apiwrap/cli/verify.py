"""``apiwrap verify``: check a job's journal end to end, sending no query and changing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from apiwrap.errors import ApiwrapError

__all__ = ["verify"]

#: How ``verify`` ends: 0 the journal is intact, 1 it is not, 2 nothing to check (usage).
INTACT, NOT_INTACT, USAGE = 0, 1, 2


def verify(
    job: Annotated[str, typer.Argument(help="Job name (or path to its journal).")],
    runs_dir: Annotated[Path, typer.Option(help="Folder of job journals.")] = Path("runs"),
) -> None:
    """Check a job's journal: the file, SQLite's integrity check, the schema, every row's seal,
    the votes' chain and the ledger behind each vote.

    Exits 0 when the journal is intact, 1 when it is not (each problem is printed), 2 when there
    is no journal to check. Resume and replay refuse a journal that fails this check.
    """
    from apiwrap.engine.jobs import journal_path
    from apiwrap.engine.journal import SCHEMA_VERSION, check_journal

    console, out = Console(stderr=True), Console(soft_wrap=True)
    try:
        path = Path(job) if job.endswith(".sqlite") else journal_path(runs_dir, job)
    except ApiwrapError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(USAGE) from None
    if not path.exists():
        console.print(f"[red]error:[/red] no journal at {escape(str(path))}")
        raise typer.Exit(USAGE)
    check = check_journal(path)
    if check.ok:
        out.print(
            f"{escape(str(path))}: [green]intact[/green] (schema {SCHEMA_VERSION}): {check.images} image(s), "
            f"{check.votes} vote(s) sealed and chained, {check.attempts} attempt(s) in the ledger"
        )
        raise typer.Exit(INTACT)
    out.print(f"{escape(str(path))}: [red]NOT INTACT[/red]")
    for problem in check.problems:
        out.print(f"  - {escape(problem)}")
    out.print("Resume and replay refuse this journal; it was not changed.")
    raise typer.Exit(NOT_INTACT)
