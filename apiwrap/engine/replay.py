"""Re-certifying a finished (or interrupted) job from its journal, with no queries."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from apiwrap.engine.journal import Journal
from apiwrap.errors import ConfigurationError, JournalError
from apiwrap.statistics.allocation import journaled_stop
from apiwrap.statistics.procedures import CertificationSettings, Fetch, ImageResult, run_procedure
from apiwrap.statistics.votes import QueryRecord

__all__ = ["Replay", "journal_settings", "replay_journal"]


@dataclass
class Replay:
    """A replay's results and how its parameters differ from the job's."""

    results: list[ImageResult]
    #: The certification parameters the replay used.
    parameters: dict[str, Any]
    #: Each parameter that differs from the job's: {"job": value, "replay": value}. Empty
    #: when the replay reproduces the job's own certificates.
    changed: dict[str, dict[str, Any]]


class _MissingVotes(LookupError):
    pass


def _stored_settings(journal: Journal, path: Path) -> CertificationSettings:
    stored = journal.parameters()
    if stored is None:
        raise JournalError(f"{path} holds no job parameters")
    fields = {f.name for f in dataclasses.fields(CertificationSettings)}
    return CertificationSettings(**{k: v for k, v in stored.items() if k in fields})


def journal_settings(path: Path) -> CertificationSettings:
    """The settings a job was run with, read from its journal."""
    journal = Journal.open_existing(path)
    try:
        return _stored_settings(journal, path)
    finally:
        journal.close()


def replay_journal(
    path: Path, *, n0: int | None = None, n: int | None = None, alpha: float | None = None
) -> Replay:
    """Results of the journal's votes under (possibly) smaller n0, n or another alpha.

    The procedure runs again on the journaled votes (the same stopping rules for
    sequential designs), and sample indices keep their roles, so a replay with the job's
    own parameters reproduces its certificates exactly. A replay that would need a vote the
    job never bought is an error. Changing n0 is only meaningful for the fixed design:
    sequential estimation indices start at the job's n0.

    Each result's ``queries`` is what the job bought for the image (its votes in the journal; a
    replay sends none); an image the budget left unfunded stays unfunded, and one that failed
    stays failed. The journal must pass :func:`~apiwrap.engine.journal.check_journal` (no vote
    edited since it was written), and the replay is recorded in it with the parameters that
    differ from the job's.
    """
    journal = Journal.open_existing(path, check_rows=True)
    try:
        settings = _stored_settings(journal, path)
        if n0 is not None and settings.design != "fixed":
            raise ConfigurationError(
                "n0 of a sequential job cannot change: it fixes where estimation indices start"
            )
        replayed = dataclasses.replace(
            settings,
            n0=settings.n0 if n0 is None else n0,
            n=settings.n if n is None else n,
            alpha=settings.alpha if alpha is None else alpha,
        )
        changed = {
            name: {"job": getattr(settings, name), "replay": getattr(replayed, name)}
            for name in ("n0", "n", "alpha")
            if getattr(settings, name) != getattr(replayed, name)
        }
        results = []
        for image in journal.images():
            votes = {record.sample_index: record for record in journal.votes(image.image_id)}
            if image.status != "done":
                # Unfunded ("budget") keeps its status; anything else (pending: a killed run) failed.
                status: Literal["budget", "failed"] = "budget" if image.status == "budget" else "failed"
                error = image.error or f"image {image.status}"
                result = _unfinished(image.name, status, error, image.result, len(votes))
                result.digest = image.digest
                results.append(result)
                continue
            try:
                # Where the job's budget allocator stopped the image, the replay stops it too.
                admit = journaled_stop(image.result)
                result = asyncio.run(run_procedure(replayed, _journal_fetch(votes), admit))
            except _MissingVotes as exc:
                raise ConfigurationError(f"{image.name}: {exc}; the replay would need new queries") from None
            result.image = image.name
            result.queries = len(votes)
            result.digest = image.digest
            result.certified_space = (image.result or {}).get("certified_space")
            results.append(result)
        parameters = dataclasses.asdict(replayed)
        journal.record_replay(parameters, changed)
        return Replay(results, parameters, changed)
    finally:
        journal.close()


def _unfinished(
    name: str, status: Literal["budget", "failed"], error: str, stored: dict[str, Any] | None, queries: int
) -> ImageResult:
    """An image that has no certificate to replay, with what the job bought for it."""
    estimation_votes = (stored or {}).get("estimation_votes", 0)
    abstain_reason = (stored or {}).get("abstain_reason") if status == "budget" else None
    return ImageResult(
        image=name,
        status=status,
        error=error,
        queries=queries,
        estimation_votes=estimation_votes,
        abstain_reason=abstain_reason,
    )


def _journal_fetch(votes: dict[int, QueryRecord]) -> Fetch:
    async def fetch(indices: Sequence[int]) -> list[QueryRecord]:
        missing = [i for i in indices if i not in votes]
        if missing:
            raise _MissingVotes(f"the job never bought sample {missing[0]}")
        return [votes[i] for i in indices]

    return fetch
