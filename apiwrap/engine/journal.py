"""The job journal: a SQLite file (WAL) that holds every paid vote durably.

One file per job. It records the job's parameters, each image's digest and outcome, one
row per query (sample index, digest of the bytes sent, final outcome, raw answer, top-1
label, model version, cost), one row per attempt (the ledger: what was sent, when, and
whether it was billed) and one row per run (when, which apiwrap, which denoisers). A vote
counts only once its row is committed, so a job killed at any point resumes without
re-buying an answered query or re-drawing a consumed index.

Credentials never reach this file: adapters keep them out of raw answers and errors.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiwrap.budgets import POSSIBLY_BILLED
from apiwrap.errors import JournalError
from apiwrap.statistics.votes import QueryRecord

__all__ = ["ImageRow", "Journal", "JournalRun"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    image_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    digest TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS queries (
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
    PRIMARY KEY (image_id, sample_index)
);
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    bytes_digest TEXT NOT NULL,
    sent_at REAL NOT NULL,
    finished_at REAL,
    outcome TEXT,
    billed INTEGER,
    cost_micro_usd INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    apiwrap_version TEXT NOT NULL,
    denoisers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replays (
    replay_id INTEGER PRIMARY KEY,
    replayed_at REAL NOT NULL,
    parameters TEXT NOT NULL,
    changed TEXT NOT NULL
);
"""


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
    """A job's durable record; single-writer, used from the event loop thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only power loss can drop the tail).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

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
            self._db.execute(
                "INSERT INTO job VALUES ('parameters', ?)", (json.dumps(parameters, sort_keys=True),)
            )
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
        self._db.execute(
            "INSERT INTO runs (started_at, apiwrap_version, denoisers) VALUES (?, ?, ?)",
            (time.time(), apiwrap_version, json.dumps(list(denoisers), sort_keys=True)),
        )

    def runs(self) -> list[JournalRun]:
        """Every run of the job, oldest first."""
        rows = self._db.execute("SELECT started_at, apiwrap_version, denoisers FROM runs ORDER BY run_id")
        return [JournalRun(started, version, json.loads(denoisers)) for started, version, denoisers in rows]

    def record_replay(self, parameters: dict[str, Any], changed: dict[str, dict[str, Any]]) -> None:
        """Record that the votes were re-certified, with the parameters used and those that
        differ from the job's: a replay that shops for parameters leaves a trace."""
        self._db.execute(
            "INSERT INTO replays (replayed_at, parameters, changed) VALUES (?, ?, ?)",
            (time.time(), json.dumps(parameters, sort_keys=True), json.dumps(changed, sort_keys=True)),
        )

    def replays(self) -> list[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
        """(parameters, changed) of every replay of this journal, oldest first."""
        rows = self._db.execute("SELECT parameters, changed FROM replays ORDER BY replay_id")
        return [(json.loads(parameters), json.loads(changed)) for parameters, changed in rows]

    # -- images -----------------------------------------------------------------------

    def image_id(self, name: str) -> int:
        self._db.execute("INSERT OR IGNORE INTO images (name) VALUES (?)", (name,))
        return int(self._db.execute("SELECT image_id FROM images WHERE name = ?", (name,)).fetchone()[0])

    def set_digest(self, image_id: int, digest: str) -> None:
        row = self._db.execute("SELECT digest FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row[0] is not None and row[0] != digest:
            raise JournalError(f"image #{image_id} changed on disk since the job started (digest differs)")
        self._db.execute("UPDATE images SET digest = ? WHERE image_id = ?", (digest, image_id))

    def finish_image(
        self, image_id: int, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None:
        self._db.execute(
            "UPDATE images SET status = ?, result = ?, error = ? WHERE image_id = ?",
            (status, json.dumps(result) if result is not None else None, error, image_id),
        )

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
        cursor = self._db.execute(
            "INSERT INTO attempts (image_id, sample_index, bytes_digest, sent_at, cost_micro_usd) "
            "VALUES (?, ?, ?, ?, ?)",
            (image_id, sample_index, bytes_digest, time.time(), cost_micro_usd),
        )
        return int(cursor.lastrowid or 0)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes that land together or not at all: a process killed inside leaves none of them."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def attempt_finished(self, attempt_id: int, outcome: str, billed: bool, cost_micro_usd: int) -> None:
        self._db.execute(
            "UPDATE attempts SET finished_at = ?, outcome = ?, billed = ?, cost_micro_usd = ? "
            "WHERE attempt_id = ?",
            (time.time(), outcome, int(billed), cost_micro_usd if billed else 0, attempt_id),
        )

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
        """Commit a finished query: from here on its vote counts, and only once."""
        cost = self._db.execute(
            "SELECT COALESCE(SUM(cost_micro_usd), 0) FROM attempts WHERE image_id = ? AND sample_index = ?",
            (image_id, record.sample_index),
        ).fetchone()[0]
        self._db.execute(
            "INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
    def open_existing(cls, path: Path) -> Journal:
        if not path.exists():
            raise JournalError(f"no journal at {path}")
        return cls(path)
