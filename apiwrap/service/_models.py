"""Pydantic models of every answer the service gives, so the OpenAPI schema describes them exactly.

Error answers are :class:`Problem` (RFC 9457, ``application/problem+json``); see ``_errors.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from apiwrap.statistics.settings import CertificationSettings

__all__ = [
    "Budget",
    "BudgetFigures",
    "CertifyAnswer",
    "Health",
    "ImageOutcome",
    "Job",
    "JobList",
    "JobResults",
    "Problem",
    "ProblemError",
    "Progress",
    "Remaining",
    "Spend",
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Progress(_Closed):
    queries_done: int = Field(description="Queries answered so far.")
    queries_total: int = Field(
        description="Queries the job needs (sequential designs: the most it can take)."
    )


class Spend(_Closed):
    usd: str = Field(description="Money billed or possibly billed (timed out), e.g. '$0.026'.")
    micro_usd: int = Field(description="The same in micro-dollars (exact).")
    billable_queries: int
    possibly_billed_queries: int = Field(
        description="Of the billable queries, those that timed out: counted against the caps, though "
        "the vendor may not have charged them."
    )


class Job(_Closed):
    """A job's status, progress and spend."""

    id: str
    kind: Literal["single", "batch"]
    status: Literal["running", "done", "cancelled", "failed"]
    settings: CertificationSettings = Field(
        description="The settings the job runs with, every default and rule applied (its journal binds them)."
    )
    images: int
    progress: Progress
    spend: Spend
    budget_exhausted: bool = Field(description="The job stopped short because its allowance ran out.")
    created_at: float = Field(description="Unix time.")
    finished_at: float | None
    error: str | None


class ImageOutcome(_Closed):
    """One image's result (``apiwrap.statistics.procedures.ImageResult``) with the client's file name."""

    image: str = Field(description="The file name the client gave (a label only).")
    position: int = Field(description="The image's place in the upload, from 0.")
    status: Literal["certified", "predicted", "abstained", "failed", "budget"]
    label: str | None = None
    radius: float | None = Field(None, description="L2 radius in the space certified_space names.")
    reference_label: str | None = None
    abstain_reason: str | None = None
    error: str | None = None
    p_lower: float | None = None
    candidate: str | None = None
    votes_for_candidate: int = 0
    estimation_votes: int = 0
    top_votes: dict[str, int] = Field(default_factory=dict)
    queries: int = 0
    failed_queries: int = 0
    model_versions: list[str] = Field(default_factory=list)
    digest: str | None = None
    certified_space: str | None = None


class CertifyAnswer(_Closed):
    job: Job
    result: ImageOutcome


class JobResults(_Closed):
    job: Job
    results: list[ImageOutcome]


class JobList(_Closed):
    jobs: list[Job]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class BudgetFigures(_Closed):
    usd: str
    micro_usd: int
    billable_queries: int


class Remaining(_Closed):
    usd: str | None = Field(description="Null: no money cap.")
    micro_usd: int | None
    queries: int | None = Field(description="Null: no query cap.")


class Budget(_Closed):
    tenant: str
    max_usd: str | None
    max_queries: int | None
    spent: BudgetFigures
    held_by_running_jobs: BudgetFigures
    remaining: Remaining


class Health(_Closed):
    status: Literal["ok"]
    vendors: list[str]
    jobs_running: int


class ProblemError(_Closed):
    loc: list[str]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details; error-specific members (``cap``, ``job``, ``errors``...) may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable URI per code: tag:apiwrap.dev,2026:problem:CODE.")
    title: str
    status: int
    detail: str
    instance: str | None
    code: str = Field(description="The stable machine-readable reason, e.g. budget_exceeded.")
    request_id: str | None
