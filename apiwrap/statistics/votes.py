"""Vote records and the sample index layout shared by every procedure.

Index layout, fixed by the settings before any vote is seen: ``CLEAN_SAMPLE`` (-1) is the
clean image; selection draws from 0..n0-1; estimation from n0 upward.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLEAN_SAMPLE", "FAILED_QUERY", "QueryRecord"]

#: The sample index of the unperturbed image (the vendor's own label, the reference).
CLEAN_SAMPLE = -1

#: Pseudo-class for a query that failed after every retry. It is a vote AGAINST every
#: real label: dropping it would bias the sample toward noise the vendor answers.
FAILED_QUERY = "<query failed>"


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One finished query: a vote for ``label`` (a real label or a pseudo-class)."""

    sample_index: int
    bytes_digest: str
    label: str
    outcome: str
    model_version: str | None
