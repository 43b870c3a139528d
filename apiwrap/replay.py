"""Re-certifying a finished (or interrupted) job from its journal, with no queries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apiwrap.engine import CertificationSettings, ImageResult, decide, sample_ranges
from apiwrap.journal import Journal, JournalError
from apiwrap.samples import CLEAN_SAMPLE

__all__ = ["replay_journal"]


def replay_journal(
    path: Path, *, n0: int | None = None, n: int | None = None, alpha: float | None = None
) -> list[ImageResult]:
    """Results of the journal's votes under (possibly) smaller n0, n or another alpha.

    The sample indices keep their roles: selection is 0..n0-1, estimation n0..n0+n-1, so a
    replay with the job's own parameters reproduces its certificates exactly. Asking for
    more samples than were bought is an error (it would need new queries).
    """
    journal = Journal.open_existing(path)
    try:
        stored = journal.parameters()
        if stored is None:
            raise JournalError(f"{path} holds no job parameters")
        fields = {f.name for f in dataclasses.fields(CertificationSettings)}
        settings = CertificationSettings(**{k: v for k, v in stored.items() if k in fields})
        replayed = dataclasses.replace(
            settings,
            n0=settings.n0 if n0 is None else n0,
            n=settings.n if n is None else n,
            alpha=settings.alpha if alpha is None else alpha,
        )
        if replayed.n0 + replayed.n > settings.n0 + settings.n:
            raise ValueError(
                f"the job bought {settings.n0 + settings.n} samples per image; "
                f"n0 + n = {replayed.n0 + replayed.n} would need new queries"
            )
        selection_indices, estimation_indices = sample_ranges(replayed)
        results = []
        for image_id, name, digest, status, stored_result, error in journal.images():
            if status != "done":
                results.append(ImageResult(image=name, status="failed", error=error or f"image {status}"))
                continue
            votes = {record.sample_index: record for record in journal.votes(image_id)}
            result = decide(
                replayed,
                votes.get(CLEAN_SAMPLE),
                [votes[i] for i in selection_indices],
                [votes[i] for i in estimation_indices],
            )
            result.image = name
            result.digest = digest
            result.certified_space = (stored_result or {}).get("certified_space")
            results.append(result)
        return results
    finally:
        journal.close()
