"""The job store: which tenant owns which job, its state, its uploaded images and final spend.

One SQLite file (``runs_dir/service.sqlite``, WAL). The votes themselves live in each job's
own journal (``runs_dir/<job id>.sqlite``, see :mod:`apiwrap.engine.journal`); this store holds what
the journal does not know: the owner, the images to resume from, and the job's lifecycle.
Uploaded bytes are kept here, never written under a name a client chose.

Every file the service writes is owner-only (0600, in 0700 folders): the store holds the
tenants' images. SQLite creates a database's ``-wal`` and ``-shm`` files with the database
file's own mode, so creating each database file 0600 before SQLite opens it is enough.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["IdempotencyRow", "JobRow", "JobStatus", "Store", "private_dir", "private_file"]

JobStatus = Literal["running", "done", "cancelled", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    settings TEXT NOT NULL,
    images INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    error TEXT,
    spent_micro_usd INTEGER NOT NULL DEFAULT 0,
    spent_queries INTEGER NOT NULL DEFAULT 0,
    queries_done INTEGER NOT NULL DEFAULT 0,
    budget_exhausted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, status);
CREATE TABLE IF NOT EXISTS pruned_spend (
    tenant TEXT PRIMARY KEY,
    spent_micro_usd INTEGER NOT NULL,
    spent_queries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE TABLE IF NOT EXISTS job_images (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    position INTEGER NOT NULL,
    filename TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, position)
);
"""

_COLUMNS = (
    "id, tenant, kind, status, settings, images, created_at, finished_at, error, "
    "spent_micro_usd, spent_queries, queries_done, budget_exhausted"
)


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    tenant: str
    kind: Literal["single", "batch"]
    status: JobStatus
    settings: dict[str, Any]
    images: int
    created_at: float
    finished_at: float | None
    error: str | None
    spent_micro_usd: int
    spent_queries: int
    queries_done: int
    budget_exhausted: bool


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    """A POST made with an ``Idempotency-Key``: its request's fingerprint and the job it made or acted on."""

    tenant: str
    key: str
    fingerprint: str
    job_id: str


def private_dir(path: Path) -> None:
    """``path`` and any missing parents, owner-only (0700) whatever the umask."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def private_file(path: Path) -> None:
    """Create ``path`` empty and owner-only (0600) unless it exists; an empty file is an empty database."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.chmod(0o600)


def _row(values: tuple[Any, ...]) -> JobRow:
    fields = list(values)
    fields[4] = json.loads(fields[4])  # settings
    fields[12] = bool(fields[12])  # budget_exhausted
    return JobRow(*fields)


class Store:
    """Thread-safe (one lock): called from the event loop and from worker threads."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        private_file(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create_job(
        self,
        job_id: str,
        tenant: str,
        kind: str,
        settings: dict[str, Any],
        images: list[tuple[str, bytes]],
        idempotency: IdempotencyRow | None = None,
    ) -> None:
        """Record a job, its images and the key it was made with in one transaction: all or nothing."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, tenant, kind, status, settings, images, created_at) "
                    "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                    (job_id, tenant, kind, json.dumps(settings, sort_keys=True), len(images), time.time()),
                )
                self._db.executemany(
                    "INSERT INTO job_images VALUES (?, ?, ?, ?)",
                    [(job_id, i, name, data) for i, (name, data) in enumerate(images)],
                )
                if idempotency is not None:
                    self._insert_key(idempotency)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None,
        spent_micro_usd: int,
        spent_queries: int,
        queries_done: int,
        budget_exhausted: bool,
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?, spent_micro_usd = ?, "
                "spent_queries = ?, queries_done = ?, budget_exhausted = ? WHERE id = ?",
                (
                    status,
                    time.time(),
                    error,
                    spent_micro_usd,
                    spent_queries,
                    queries_done,
                    int(budget_exhausted),
                    job_id,
                ),
            )

    def job(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row(row) if row else None

    def jobs(self, *, tenant: str | None = None, status: JobStatus | None = None) -> list[JobRow]:
        query, args = f"SELECT {_COLUMNS} FROM jobs WHERE 1 = 1", list[str]()
        if tenant is not None:
            query, args = query + " AND tenant = ?", [*args, tenant]
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at", args).fetchall()
        return [_row(row) for row in rows]

    def jobs_page(self, tenant: str, *, after: int, limit: int) -> list[tuple[int, JobRow]]:
        """(position, job) of the tenant's jobs made after position ``after``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT rowid, {_COLUMNS} FROM jobs WHERE tenant = ? AND rowid > ? ORDER BY rowid LIMIT ?",
                (tenant, after, limit),
            ).fetchall()
        return [(row[0], _row(row[1:])) for row in rows]

    def _insert_key(self, row: IdempotencyRow) -> None:
        self._db.execute(
            "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?)",
            (row.tenant, row.key, row.fingerprint, row.job_id, time.time()),
        )

    def add_key(self, row: IdempotencyRow) -> None:
        with self._lock:
            self._insert_key(row)

    def keys(self) -> list[IdempotencyRow]:
        with self._lock:
            rows = self._db.execute("SELECT tenant, key, fingerprint, job_id FROM idempotency").fetchall()
        return [IdempotencyRow(*row) for row in rows]

    def prune(self, finished_before: float) -> list[str]:
        """Delete jobs that finished before ``finished_before`` (a time), their images and keys; their ids.

        What they spent moves to ``pruned_spend``, so a tenant's caps still count it.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO pruned_spend SELECT tenant, SUM(spent_micro_usd), SUM(spent_queries) "
                    "FROM jobs WHERE status != 'running' AND finished_at < ? GROUP BY tenant "
                    "ON CONFLICT (tenant) DO UPDATE SET "
                    "spent_micro_usd = spent_micro_usd + excluded.spent_micro_usd, "
                    "spent_queries = spent_queries + excluded.spent_queries",
                    (finished_before,),
                )
                ids = [
                    job_id
                    for (job_id,) in self._db.execute(
                        "SELECT id FROM jobs WHERE status != 'running' AND finished_at < ?",
                        (finished_before,),
                    )
                ]
                for table, column in (("job_images", "job_id"), ("idempotency", "job_id"), ("jobs", "id")):
                    self._db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(i,) for i in ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def images(self, job_id: str) -> list[tuple[str, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT filename, data FROM job_images WHERE job_id = ? ORDER BY position", (job_id,)
            ).fetchall()
        return [(name, bytes(data)) for name, data in rows]

    def filenames(self, job_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT filename FROM job_images WHERE job_id = ? ORDER BY position", (job_id,)
            ).fetchall()
        return [name for (name,) in rows]

    def finished_spend(self, tenant: str) -> tuple[int, int]:
        """(micro-USD, billable queries) of the tenant's jobs that are no longer running, pruned ones too."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(spent_micro_usd), 0), COALESCE(SUM(spent_queries), 0) FROM ("
                "SELECT spent_micro_usd, spent_queries FROM jobs WHERE tenant = ? AND status != 'running' "
                "UNION ALL SELECT spent_micro_usd, spent_queries FROM pruned_spend WHERE tenant = ?)",
                (tenant, tenant),
            ).fetchone()
        return int(row[0]), int(row[1])
