"""The job journal: a SQLite file (WAL) that holds every paid vote durably.

One file per job. It records the job's parameters, each image's digest and outcome, one
row per query (sample index, digest of the bytes sent, final outcome, raw answer, top-1
label, model version, cost), one row per attempt (the ledger: what was sent, when, and
whether it was billed) and one row per run (when, which apiwrap, which denoisers). A vote
counts only once its row is committed, so a job killed at any point resumes without
re-buying an answered query or re-drawing a consumed index.

Every row carries a seal, the sha256 of its table and its values, and the votes are chained (each
vote's seal covers the previous vote's), so an edited, inserted or deleted row is found by
:func:`check_journal` (``apiwrap verify``); a resume or a replay refuses a journal that fails it, and a
file that is empty, damaged, not SQLite or not a journal of this schema is refused before anything
is written. The seals detect damage and edits made without apiwrap's code; they are not a signature:
whoever can write the file and run this module can seal a forged row.

Credentials never reach this file: adapters keep them out of raw answers and errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiwrap.budgets import POSSIBLY_BILLED
from apiwrap.errors import JournalError
from apiwrap.statistics.votes import QueryRecord

__all__ = ["SCHEMA_VERSION", "ImageRow", "Journal", "JournalCheck", "JournalRun", "check_journal", "seals"]

#: The layout this apiwrap writes and reads (SQLite's ``user_version``). 2: every row sealed,
#: votes chained. Journals of schema 1 (no seals) have no way to show they are intact.
SCHEMA_VERSION = 2
#: SQLite's ``application_id`` of an apiwrap journal ("apw!"): tells it from any other database.
_APPLICATION_ID = 0x61707721
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE job (key TEXT PRIMARY KEY, value TEXT NOT NULL, seal TEXT NOT NULL DEFAULT '');
CREATE TABLE images (
    image_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    digest TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    result TEXT,
    seal TEXT NOT NULL DEFAULT ''
);
CREATE TABLE queries (
    seq INTEGER NOT NULL UNIQUE,
    image_id INTEGER NOT NULL REFERENCES images(image_id),
    sample_index INTEGER NOT NULL,
    bytes_digest TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    label TEXT NOT NULL,
    model_version TEXT,
    raw TEXT,
    error TEXT,
    cost_micro_usd INTEGER NOT NULL,
    first_sent_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    seal TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (image_id, sample_index)
);
CREATE TABLE attempts (
    attempt_id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    bytes_digest TEXT NOT NULL,
    sent_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    billed INTEGER,
    cost_micro_usd INTEGER,
    seal TEXT NOT NULL DEFAULT ''
);
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    apiwrap_version TEXT NOT NULL,
    denoisers TEXT NOT NULL,
    seal TEXT NOT NULL DEFAULT ''
);
CREATE TABLE replays (
    replay_id INTEGER PRIMARY KEY,
    replayed_at REAL NOT NULL,
    parameters TEXT NOT NULL,
    changed TEXT NOT NULL,
    seal TEXT NOT NULL DEFAULT ''
);
"""

#: Each table's key column, in the order a check reads the rows. ``queries`` is read in the
#: order its votes were committed (``seq``), the order its chain follows.
_KEYS = {
    "job": "key",
    "images": "image_id",
    "attempts": "attempt_id",
    "runs": "run_id",
    "replays": "replay_id",
    "queries": "seq",
}
_CHAINED = "queries"
#: Problems listed per table before the rest are only counted.
_LISTED = 5


def _seal(table: str, row: Mapping[str, object], previous: str) -> str:
    """sha256 of a row's table, values (every column but ``seal``) and, for a chained table, the
    previous row's seal. Values are read back from SQLite, so the same row always gives the same text."""
    text = json.dumps([table, previous, dict(row)], sort_keys=True, separators=(",", ":"), default=_blob)
    return hashlib.sha256(text.encode()).hexdigest()


def _blob(value: object) -> object:
    """apiwrap writes no blob; one read from a damaged file still gets a seal (a wrong one)."""
    if isinstance(value, bytes):
        return {"blob": value.hex()}
    raise TypeError(f"no seal for a {type(value).__name__}")


def _rows(db: sqlite3.Connection, table: str) -> Iterator[dict[str, Any]]:
    cursor = db.execute(f"SELECT * FROM {table} ORDER BY {_KEYS[table]}")
    columns = [column[0] for column in cursor.description]
    for values in cursor:
        yield dict(zip(columns, values, strict=True))


def seals(db: sqlite3.Connection) -> Iterator[tuple[str, object, str, str]]:
    """(table, key, stored seal, expected seal) of every row, the votes' chain computed from the
    expected seal of each previous vote, so one edited vote also breaks every later vote's link."""
    for table in _KEYS:
        previous = ""
        for row in _rows(db, table):
            stored = row.pop("seal")
            expected = _seal(table, row, previous)
            if table == _CHAINED:
                previous = expected
            yield table, row[_KEYS[table]], stored, expected


@dataclass
class JournalCheck:
    """What :func:`check_journal` found: no problem means every row is as apiwrap wrote it."""

    path: Path
    problems: list[str] = field(default_factory=list)
    images: int = 0
    votes: int = 0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _live(path: Path) -> bool:
    """Whether the journal has a -wal beside it: a job may have it open in this very process, and
    closing any other descriptor of the file would drop that connection's POSIX locks (SQLite's
    own connections share them safely), so only SQLite may read it then."""
    return path.with_name(path.name + "-wal").exists()


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a journal before SQLite reads it (it then could not tell)."""
    if not path.is_file():
        return "it is not a file"
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes): a journal never is (truncated, or made by another program)"
    if _live(path):
        return None  # SQLite reads it (see _live)
    with path.open("rb") as handle:
        if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            return "it is not a SQLite database (overwritten, or another kind of file)"
    return None


def _schema_problem(db: sqlite3.Connection) -> str | None:
    (application_id,) = db.execute("PRAGMA application_id").fetchone()
    (version,) = db.execute("PRAGMA user_version").fetchone()
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if application_id != _APPLICATION_ID:
        if application_id == 0 and {"job", "queries", "attempts"} <= tables:
            return (
                f"it is a journal of apiwrap's schema 1, whose rows are not sealed; this apiwrap reads "
                f"schema {SCHEMA_VERSION} only. Replay or resume it with the apiwrap that wrote it, "
                "or start a new job"
            )
        return "it is a SQLite database but not an apiwrap journal"
    if version != SCHEMA_VERSION:
        newer = "a newer" if version > SCHEMA_VERSION else "an older"
        return f"it has schema {version}, from {newer} apiwrap; this apiwrap reads schema {SCHEMA_VERSION}"
    missing = sorted(_KEYS.keys() - tables)
    if missing:
        return f"it lacks the table(s) {', '.join(missing)} of an apiwrap journal"
    for table, columns in _columns().items():
        found = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        if found != columns:
            return (
                f"its table {table} has the columns {', '.join(found)}, not those of schema {SCHEMA_VERSION}"
            )
    return None


def _columns() -> dict[str, list[str]]:
    """The columns of each table of this schema, as SQLite reads them from ``_SCHEMA``."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        return {table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")] for table in _KEYS}
    finally:
        db.close()


def _row_problems(db: sqlite3.Connection, check: JournalCheck) -> None:
    found: Counter[str] = Counter()
    vote_keys = {
        seq: (name, index)
        for seq, name, index in db.execute(
            "SELECT q.seq, COALESCE(i.name, '#' || q.image_id), q.sample_index FROM queries q "
            "LEFT JOIN images i USING (image_id)"
        )
    }
    broken_at: object = None
    for table, key, stored, expected in seals(db):
        if stored == expected:
            continue
        found[table] += 1
        if table == _CHAINED:
            broken_at = key if broken_at is None else broken_at
        elif found[table] <= _LISTED:
            check.problems.append(
                f"{table} row {key!r} does not match its seal: changed since it was written"
            )
    for table, count in found.items():
        if table != _CHAINED and count > _LISTED:
            check.problems.append(
                f"... and {count - _LISTED} more row(s) of {table} not matching their seals"
            )
    if broken_at is not None:
        name, index = vote_keys[broken_at]
        later = found[_CHAINED] - 1
        check.problems.append(
            f"the votes' chain breaks at the vote of {name}, sample {index} (vote #{broken_at}): that vote "
            "was edited, or one was inserted or deleted before it, after apiwrap wrote it"
            + (f" ({later} later vote(s) hang on it)" if later else "")
        )
    # A vote's cost is the sum of its attempts' (record_query), and an answered attempt's vote is
    # committed with it: a deleted attempt or a deleted last vote shows in the last two counts.
    for count_sql, problem in (
        (
            "SELECT COUNT(*) FROM queries WHERE image_id NOT IN (SELECT image_id FROM images)",
            "{} vote(s) belong to no image of the journal",
        ),
        (
            "SELECT COUNT(*) FROM queries q WHERE q.cost_micro_usd != (SELECT "
            "COALESCE(SUM(a.cost_micro_usd), 0) FROM attempts a "
            "WHERE a.image_id = q.image_id AND a.sample_index = q.sample_index)",
            "{} vote(s) cost other than their attempts in the ledger",
        ),
        (
            "SELECT COUNT(*) FROM attempts a WHERE a.outcome = 'ok' AND NOT EXISTS (SELECT 1 FROM queries q "
            "WHERE q.image_id = a.image_id AND q.sample_index = a.sample_index)",
            "{} answered attempt(s) have no vote: votes were deleted",
        ),
    ):
        if count := db.execute(count_sql).fetchone()[0]:
            check.problems.append(problem.format(count))
    parameters = db.execute("SELECT value FROM job WHERE key = 'parameters'").fetchone()
    if parameters is not None:
        try:
            json.loads(parameters[0])
        except ValueError:
            check.problems.append("the job's parameters are not valid JSON")


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only view of the journal at ``path`` that leaves its folder as it was. With a -wal
    beside it (a job running, or killed), committed writes may still be there: it is read in
    place, its companions exist already. Without one the file holds everything, and a private
    copy is read, since SQLite would otherwise make -wal and -shm files beside a file it refuses."""
    if path.with_name(path.name + "-wal").exists():
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            yield db
        finally:
            db.close()
        return
    with tempfile.TemporaryDirectory(prefix="apiwrap-check-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        db = sqlite3.connect(copy)
        try:
            yield db
        finally:
            db.close()


def check_journal(path: Path, *, rows: bool = True) -> JournalCheck:
    """Check a journal end to end without changing it: the file, SQLite's own integrity check, the
    schema, every row's seal, the votes' chain and the ledger behind each vote. Without ``rows``
    only the file and its header (application id, schema version) are read, without SQLite."""
    check = JournalCheck(path)
    if not path.exists():
        check.problems.append("there is no such file")
        return check
    if (problem := _file_problem(path)) is not None:
        check.problems.append(problem)
        return check
    if _live(path):
        ours = False  # the header is read by SQLite below
    else:
        with path.open("rb") as handle:
            header = handle.read(100)
        ours = (
            len(header) == 100
            and int.from_bytes(header[68:72], "big") == _APPLICATION_ID
            and int.from_bytes(header[60:64], "big") == SCHEMA_VERSION
        )
    if _live(path) and not rows:
        try:
            with _snapshot(path) as db:
                if (problem := _schema_problem(db)) is not None:
                    check.problems.append(problem)
        except sqlite3.DatabaseError as exc:
            check.problems.append(f"SQLite finds the file damaged: {exc}")
        return check
    if ours and not rows:
        return check
    try:
        with _snapshot(path) as db:
            integrity = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
            if integrity != ["ok"]:
                check.problems.append("SQLite finds the file damaged: " + "; ".join(integrity))
            elif (problem := _schema_problem(db)) is not None:
                check.problems.append(problem)
            elif rows:
                _row_problems(db, check)
                check.images, check.votes, check.attempts = (
                    db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    for table in ("images", "queries", "attempts")
                )
    except sqlite3.DatabaseError as exc:
        check.problems.append(f"SQLite finds the file damaged: {exc}")
    return check


def _refusal(check: JournalCheck) -> JournalError:
    return JournalError(
        f"journal {check.path} cannot be used: {'; '.join(check.problems[:3])}"
        + (f" (and {len(check.problems) - 3} more problems)" if len(check.problems) > 3 else "")
        + ". Nothing was changed; move the file away or choose another job name to start over"
    )


def _create(path: Path) -> None:
    """Write an empty journal of this schema at ``path`` in one step: it is built in a temporary
    file of the same folder and linked into place, so no kill leaves a half-made journal, and a
    journal another process made meanwhile is never replaced. Mode 0600: it will hold raw answers."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
        finally:
            db.close()
        os.link(temporary, path)
    except FileExistsError:
        raise JournalError(f"journal {path} was created by another process meanwhile") from None
    finally:
        os.unlink(temporary)


#: The attempt outcomes of possibly billed attempts, as SQL parameters and their placeholders.
_POSSIBLY_BILLED_OUTCOMES = tuple(sorted(POSSIBLY_BILLED))
_POSSIBLY_BILLED = ", ".join("?" * len(_POSSIBLY_BILLED_OUTCOMES))


@dataclass(frozen=True, slots=True)
class JournalRun:
    """One run of a job (the first, or a resume) as the journal recorded it."""

    started_at: float
    apiwrap_version: str
    #: The provenance record (``DenoiserProvenance.to_json()``) of each distinct denoiser that
    #: prepared this run's samples: the local one, or those of the Ray workers.
    denoisers: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One image of a job as the journal keeps it."""

    image_id: int
    name: str
    #: The pixel digest, set once the image was decoded (None before).
    digest: str | None
    #: ``pending`` until the image ends; then ``done`` (a result to replay) or why it stopped.
    status: str
    #: The image's result as :meth:`~apiwrap.statistics.procedures.ImageResult.to_json` wrote it.
    result: dict[str, Any] | None
    error: str | None


class Journal:
    """A job's durable record; single-writer, used from the event loop thread.

    A new journal is created at ``path``; an existing one is opened only if :func:`check_journal`
    finds it intact (its rows too, unless ``check_rows`` is false), so a resume never continues
    from a damaged, edited or foreign file.
    """

    def __init__(self, path: Path, *, check_rows: bool = True) -> None:
        if path.exists() or path.is_symlink():
            check = check_journal(path, rows=check_rows)
            if not check.ok:
                raise _refusal(check)
        else:
            _create(path)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only power loss can drop the tail).
        self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes that land together or not at all: a process killed inside leaves none of them.
        Inside another transaction it joins that one (its writes land with the outer ones)."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _reseal(self, table: str, key: object) -> None:
        """Seal a row as it now stands; called in the transaction that wrote it, so no row is
        ever committed unsealed."""
        column = _KEYS[table]
        cursor = self._db.execute(f"SELECT * FROM {table} WHERE {column} = ?", (key,))
        names = [description[0] for description in cursor.description]
        row = dict(zip(names, cursor.fetchone(), strict=True))
        row.pop("seal")
        previous = ""
        if table == _CHAINED:
            before = self._db.execute(
                f"SELECT seal FROM {table} WHERE {column} < ? ORDER BY {column} DESC LIMIT 1",
                (key,),
            ).fetchone()
            previous = before[0] if before else ""
        self._db.execute(
            f"UPDATE {table} SET seal = ? WHERE {column} = ?",
            (_seal(table, row, previous), key),
        )

    # -- job parameters ---------------------------------------------------------------

    def parameters(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM job WHERE key = 'parameters'").fetchone()
        return json.loads(row[0]) if row else None

    def changed_parameters(self, parameters: dict[str, Any]) -> list[str]:
        """The keys whose value in ``parameters`` differs from the stored one (none stored: none)."""
        stored = self.parameters()
        if stored is None:
            return []
        keys = parameters.keys() | stored.keys()
        return sorted(key for key in keys if stored.get(key) != parameters.get(key))

    def bind_parameters(self, parameters: dict[str, Any]) -> None:
        """Store the job's parameters, or check they equal those already stored."""
        stored = self.parameters()
        if stored is None:
            with self.transaction():
                self._db.execute(
                    "INSERT INTO job (key, value) VALUES ('parameters', ?)",
                    (json.dumps(parameters, sort_keys=True),),
                )
                self._reseal("job", "parameters")
            return
        changed = self.changed_parameters(parameters)
        if changed:
            details = ", ".join(f"{key}: {stored.get(key)!r} -> {parameters.get(key)!r}" for key in changed)
            raise JournalError(
                f"job {self.path.stem!r} was started with other parameters ({details}); "
                "use a new --job name, or the same parameters to resume"
            )

    def record_run(self, apiwrap_version: str, denoisers: Sequence[dict[str, Any]]) -> None:
        """Record that a run of the job starts, with what it does not bind but may explain later
        (the apiwrap and runtime versions that prepared its samples)."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO runs (started_at, apiwrap_version, denoisers) VALUES (?, ?, ?)",
                (time.time(), apiwrap_version, json.dumps(list(denoisers), sort_keys=True)),
            )
            self._reseal("runs", cursor.lastrowid)

    def runs(self) -> list[JournalRun]:
        """Every run of the job, oldest first."""
        rows = self._db.execute("SELECT started_at, apiwrap_version, denoisers FROM runs ORDER BY run_id")
        return [JournalRun(started, version, json.loads(denoisers)) for started, version, denoisers in rows]

    def record_replay(self, parameters: dict[str, Any], changed: dict[str, dict[str, Any]]) -> None:
        """Record that the votes were re-certified, with the parameters used and those that
        differ from the job's: a replay that shops for parameters leaves a trace."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO replays (replayed_at, parameters, changed) VALUES (?, ?, ?)",
                (time.time(), json.dumps(parameters, sort_keys=True), json.dumps(changed, sort_keys=True)),
            )
            self._reseal("replays", cursor.lastrowid)

    def replays(self) -> list[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
        """(parameters, changed) of every replay of this journal, oldest first."""
        rows = self._db.execute("SELECT parameters, changed FROM replays ORDER BY replay_id")
        return [(json.loads(parameters), json.loads(changed)) for parameters, changed in rows]

    # -- images -----------------------------------------------------------------------

    def image_id(self, name: str) -> int:
        row = self._db.execute("SELECT image_id FROM images WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        with self.transaction():
            cursor = self._db.execute("INSERT INTO images (name) VALUES (?)", (name,))
            self._reseal("images", cursor.lastrowid)
        return int(cursor.lastrowid or 0)

    def set_digest(self, image_id: int, digest: str) -> None:
        row = self._db.execute("SELECT digest FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row[0] is not None and row[0] != digest:
            raise JournalError(f"image #{image_id} changed on disk since the job started (digest differs)")
        with self.transaction():
            self._db.execute("UPDATE images SET digest = ? WHERE image_id = ?", (digest, image_id))
            self._reseal("images", image_id)

    def finish_image(
        self, image_id: int, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE images SET status = ?, result = ?, error = ? WHERE image_id = ?",
                (status, json.dumps(result) if result is not None else None, error, image_id),
            )
            self._reseal("images", image_id)

    def images(self) -> list[ImageRow]:
        """Every image of the job, in the order the job first met them."""
        rows = self._db.execute(
            "SELECT image_id, name, digest, status, result, error FROM images ORDER BY image_id"
        )
        return [
            ImageRow(image_id, name, digest, status, json.loads(result) if result else None, error)
            for image_id, name, digest, status, result, error in rows
        ]

    # -- queries and the ledger -------------------------------------------------------

    def answered(self, image_id: int) -> dict[int, QueryRecord]:
        """Finished queries of an image by sample index."""
        rows = self._db.execute(
            "SELECT sample_index, bytes_digest, label, outcome, model_version FROM queries "
            "WHERE image_id = ?",
            (image_id,),
        )
        return {row[0]: QueryRecord(*row) for row in rows}

    def attempt_sent(self, image_id: int, sample_index: int, bytes_digest: str, cost_micro_usd: int) -> int:
        """Record an attempt as sent (before the request leaves) and return its id.

        Its price is recorded now: if the process dies before the outcome is known, the
        attempt is settled as billed (see :meth:`spent`).
        """
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO attempts (image_id, sample_index, bytes_digest, sent_at, cost_micro_usd) "
                "VALUES (?, ?, ?, ?, ?)",
                (image_id, sample_index, bytes_digest, time.time(), cost_micro_usd),
            )
            self._reseal("attempts", cursor.lastrowid)
        return int(cursor.lastrowid or 0)

    def attempt_finished(self, attempt_id: int, outcome: str, billed: bool, cost_micro_usd: int) -> None:
        with self.transaction():
            self._db.execute(
                "UPDATE attempts SET finished_at = ?, outcome = ?, billed = ?, cost_micro_usd = ? "
                "WHERE attempt_id = ?",
                (time.time(), outcome, int(billed), cost_micro_usd if billed else 0, attempt_id),
            )
            self._reseal("attempts", attempt_id)

    def record_query(
        self,
        image_id: int,
        record: QueryRecord,
        *,
        attempts: int,
        raw: str | None,
        error: str | None,
        first_sent_at: float,
    ) -> None:
        """Commit a finished query: from here on its vote counts, and only once. Its seal chains
        it to the vote committed before it."""
        with self.transaction():
            cost = self._db.execute(
                "SELECT COALESCE(SUM(cost_micro_usd), 0) FROM attempts "
                "WHERE image_id = ? AND sample_index = ?",
                (image_id, record.sample_index),
            ).fetchone()[0]
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM queries").fetchone()
            self._db.execute(
                "INSERT INTO queries (seq, image_id, sample_index, bytes_digest, attempts, outcome, label, "
                "model_version, raw, error, cost_micro_usd, first_sent_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    image_id,
                    record.sample_index,
                    record.bytes_digest,
                    attempts,
                    record.outcome,
                    record.label,
                    record.model_version,
                    raw,
                    error,
                    cost,
                    first_sent_at,
                    time.time(),
                ),
            )
            self._reseal("queries", seq)

    def spent(self) -> tuple[int, int]:
        """(micro-USD, billable queries) the vendor may have charged so far according to the ledger.

        An attempt with no recorded outcome (the process died while it was in flight) counts
        as billed: the vendor may have answered and charged it, and a resumed job re-sends
        it, so the caps of a resumed job hold whatever happened to those answers.
        """
        row = self._db.execute(
            "SELECT COALESCE(SUM(COALESCE(cost_micro_usd, 0)), 0), COUNT(*) FROM attempts "
            "WHERE billed = 1 OR finished_at IS NULL"
        ).fetchone()
        return int(row[0]), int(row[1])

    def possibly_billed(self) -> tuple[int, int]:
        """(micro-USD, queries) of the part of :meth:`spent` whose answers never came back in
        time (outcome ``timeout``): counted against the caps as billed, perhaps never charged."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(COALESCE(cost_micro_usd, 0)), 0), COUNT(*) FROM attempts "
            f"WHERE billed = 1 AND outcome IN ({_POSSIBLY_BILLED})",
            _POSSIBLY_BILLED_OUTCOMES,
        ).fetchone()
        return int(row[0]), int(row[1])

    def possibly_billed_by_image(self) -> dict[int, int]:
        """micro-USD of :meth:`possibly_billed` per image id (a part of :meth:`billed_by_image`)."""
        rows = self._db.execute(
            "SELECT image_id, COALESCE(SUM(cost_micro_usd), 0) FROM attempts "
            f"WHERE billed = 1 AND outcome IN ({_POSSIBLY_BILLED}) GROUP BY image_id",
            _POSSIBLY_BILLED_OUTCOMES,
        )
        return {int(image_id): int(cost) for image_id, cost in rows}

    def in_flight_digests(self) -> dict[tuple[int, int], set[str]]:
        """sha256 of the bytes of each attempt an earlier run left without an outcome, by
        (image id, sample index), for samples that have no vote yet: a resumed job re-prepares
        them and must send these very bytes again."""
        rows = self._db.execute(
            "SELECT image_id, sample_index, bytes_digest FROM attempts a WHERE finished_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM queries q WHERE q.image_id = a.image_id "
            "AND q.sample_index = a.sample_index)"
        )
        digests: dict[tuple[int, int], set[str]] = {}
        for image_id, sample_index, digest in rows:
            digests.setdefault((image_id, sample_index), set()).add(digest)
        return digests

    def unfinished_attempts(self) -> int:
        """Attempts sent but never answered: the process died with them in flight, so each may
        have been billed once for the lost answer and once more when it was re-sent."""
        return int(self._db.execute("SELECT COUNT(*) FROM attempts WHERE finished_at IS NULL").fetchone()[0])

    def outcome_counts(self) -> Counter[str]:
        rows = self._db.execute("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome")
        return Counter({outcome or "in flight": count for outcome, count in rows})

    def billed_by_image(self) -> dict[int, int]:
        """micro-USD billed per image id according to the ledger, retries included."""
        rows = self._db.execute(
            "SELECT image_id, COALESCE(SUM(cost_micro_usd), 0) FROM attempts WHERE billed = 1 "
            "GROUP BY image_id"
        )
        return {int(image_id): int(cost) for image_id, cost in rows}

    def activity_span(self) -> tuple[float, float] | None:
        """(first attempt sent, last attempt finished) in epoch seconds, over every run of the job."""
        first, last = self._db.execute("SELECT MIN(sent_at), MAX(finished_at) FROM attempts").fetchone()
        return None if first is None else (float(first), float(last if last is not None else first))

    def votes(self, image_id: int) -> Iterator[QueryRecord]:
        rows = self._db.execute(
            "SELECT sample_index, bytes_digest, label, outcome, model_version FROM queries "
            "WHERE image_id = ? ORDER BY sample_index",
            (image_id,),
        )
        return (QueryRecord(*row) for row in rows)

    @classmethod
    def open_existing(cls, path: Path, *, check_rows: bool = False) -> Journal:
        """An existing journal. Its file and schema are always checked; its rows' seals only with
        ``check_rows`` (a replay's reading, which decides certificates; a status read stays cheap)."""
        if not path.exists():
            raise JournalError(f"no journal at {path}")
        return cls(path, check_rows=check_rows)
