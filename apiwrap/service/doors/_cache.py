"""The doors' certificate cache: which finished job already certified an image, per tenant.

One SQLite file (``runs_dir/proxy-cache.sqlite``, owner-only) maps (tenant, key) to the job
whose journal holds the certificate; the certificate itself is read back from that journal,
so the cache holds no result of its own and a pruned job is simply a miss. The key binds the
image's bytes, the resolved settings and the vendor's model options
(:func:`certificate_key`). An entry is served while it is younger than the TTL and its vendor
model version is the one the vendor reported last: a fresh certificate that sees another
version retires every entry of the older one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from apiwrap.service._store import private_file
from apiwrap.statistics.settings import CertificationSettings

__all__ = ["CertificateCache", "certificate_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    vendor TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS certificates_by_vendor ON certificates (vendor, created_at);
"""
#: A fresh entry of the tenant's, whose model version is the one its vendor's latest entry has.
_LOOKUP = """
SELECT c.job_id FROM certificates c
WHERE c.tenant = ? AND c.key = ? AND c.created_at >= ? AND c.model_version = (
    SELECT model_version FROM certificates WHERE vendor = c.vendor
    ORDER BY created_at DESC, rowid DESC LIMIT 1
)
"""


def certificate_key(
    settings: CertificationSettings, image: bytes, model_options: Mapping[str, object]
) -> str:
    """What makes two door requests the same certification: settings, vendor options, image bytes."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    digest.update(json.dumps(dict(model_options), sort_keys=True, default=str).encode())
    digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()


class CertificateCache:
    """Thread-safe; call it through ``asyncio.to_thread``. ``ttl_s`` 0 turns it off."""

    def __init__(self, path: Path, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._ttl_s = ttl_s
        self._clock = clock

    def _connection(self) -> sqlite3.Connection:
        # Opened at the first door request: a server whose doors are never used writes no file.
        if self._db is None:
            private_file(self._path)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def lookup(self, tenant: str, key: str) -> str | None:
        """The job that certified ``key`` for ``tenant``, if it is fresh and of the vendor's current model."""
        if self._ttl_s <= 0:
            return None
        with self._lock:
            row = self._connection().execute(_LOOKUP, (tenant, key, self._clock() - self._ttl_s)).fetchone()
        return None if row is None else str(row[0])

    def store(self, tenant: str, key: str, job_id: str, vendor: str, model_version: str) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO certificates VALUES (?, ?, ?, ?, ?, ?)",
                (tenant, key, job_id, vendor, model_version, self._clock()),
            )

    def forget(self, tenant: str, key: str) -> None:
        with self._lock:
            self._connection().execute("DELETE FROM certificates WHERE tenant = ? AND key = ?", (tenant, key))
