"""A finished (or interrupted) job as its journal records it: the one input of every report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apiwrap.engine.journal import Journal, JournalRun
from apiwrap.errors import JournalError
from apiwrap.statistics.procedures import CertificationSettings, ImageResult
from apiwrap.statistics.votes import QueryRecord

__all__ = ["ImageRecord", "JobRecord", "load_job"]


@dataclass(frozen=True)
class ImageRecord:
    """One image of the job: its stored result (None while pending), its votes and what it cost."""

    image_id: int
    name: str
    digest: str | None
    journal_status: str
    result: ImageResult | None
    error: str | None
    votes: list[QueryRecord]
    billed_micro_usd: int
    #: The part of ``billed_micro_usd`` whose answers never came back in time (timed out).
    possibly_billed_micro_usd: int

    @property
    def status(self) -> str:
        return self.result.status if self.result is not None else self.journal_status


@dataclass(frozen=True)
class JobRecord:
    name: str
    journal: Path
    settings: CertificationSettings
    #: Everything bound in the journal: the settings plus noise scheme, encoding, label rule, the
    #: vendor's model options and the denoiser's provenance (weights digest, runtime, device, precision).
    parameters: dict[str, Any]
    images: list[ImageRecord]
    spent_micro_usd: int
    billed_queries: int
    #: The part of the spend whose answers never came back in time: counted, perhaps not charged.
    possibly_billed_micro_usd: int
    possibly_billed_queries: int
    #: (first query sent, last query answered), epoch seconds; None if nothing was sent.
    activity: tuple[float, float] | None
    outcomes: dict[str, int]
    #: Each run of the job (the first and every resume): when, which apiwrap, which denoisers.
    runs: list[JournalRun]

    @property
    def results(self) -> list[ImageResult]:
        return [image.result for image in self.images if image.result is not None]

    def describe(self) -> str:
        """The settings that tell jobs apart on one plot (vendor, sigma, denoiser, samples)."""
        s = self.settings
        samples = f"n={s.n}" if s.design == "fixed" else f"sequential <= {s.max_queries}"
        return f"{self.name}: {s.vendor}, sigma={s.sigma:g}, denoiser {s.denoiser}, {samples}"


def load_job(path: Path) -> JobRecord:
    """Read a job's journal; sends no query and changes nothing in it."""
    journal = Journal.open_existing(path)
    try:
        parameters = journal.parameters()
        if parameters is None:
            raise JournalError(f"{path} holds no job parameters")
        fields = {f.name for f in dataclasses.fields(CertificationSettings)}
        settings = CertificationSettings(**{k: v for k, v in parameters.items() if k in fields})
        billed, possibly = journal.billed_by_image(), journal.possibly_billed_by_image()
        images = [
            ImageRecord(
                image_id=image.image_id,
                name=image.name,
                digest=image.digest,
                journal_status=image.status,
                result=ImageResult(**image.result) if image.result is not None else None,
                error=image.error,
                votes=list(journal.votes(image.image_id)),
                billed_micro_usd=billed.get(image.image_id, 0),
                possibly_billed_micro_usd=possibly.get(image.image_id, 0),
            )
            for image in journal.images()
        ]
        spent_micro_usd, billed_queries = journal.spent()
        possibly_micro_usd, possibly_queries = journal.possibly_billed()
        return JobRecord(
            name=path.stem,
            journal=path,
            settings=settings,
            parameters=parameters,
            images=images,
            spent_micro_usd=spent_micro_usd,
            billed_queries=billed_queries,
            possibly_billed_micro_usd=possibly_micro_usd,
            possibly_billed_queries=possibly_queries,
            activity=journal.activity_span(),
            outcomes=dict(journal.outcome_counts()),
            runs=journal.runs(),
        )
    finally:
        journal.close()
