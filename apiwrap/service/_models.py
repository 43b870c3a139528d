"""Pydantic models of every answer the service gives, so the OpenAPI schema describes them exactly.

Money is :class:`Money`, a decimal string with its currency (``{"amount": "0.026", "currency":
"USD"}``: exact, unlike a JSON number); times are ISO 8601 strings in UTC. Error answers are
:class:`Problem` (RFC 9457, ``application/problem+json``); see ``_errors.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from apiwrap.budgets import from_micro_usd
from apiwrap.statistics.settings import CertificationSettings

__all__ = [
    "Budget",
    "CertifyAnswer",
    "Health",
    "ImageOutcome",
    "Job",
    "JobList",
    "JobResults",
    "JobSpend",
    "Money",
    "Problem",
    "ProblemError",
    "Progress",
    "Remaining",
    "Spend",
    "money",
    "utc_time",
]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Money(_Closed):
    amount: str = Field(
        pattern=r"^[0-9]+\.[0-9]{2,6}$",
        description="A decimal string, exact to the micro-dollar; at least two decimals.",
        examples=["0.026", "25.00"],
    )
    currency: Literal["USD"] = Field("USD", description="ISO 4217: vendors bill in US dollars.")


def money(micro_usd: int) -> Money:
    """Micro-dollars as :class:`Money`: ``26_000`` -> ``0.026``, ``25_000_000`` -> ``25.00``."""
    whole, _, fraction = f"{from_micro_usd(micro_usd):.6f}".partition(".")
    return Money(amount=f"{whole}.{fraction.rstrip('0').ljust(2, '0')}")


def utc_time(unix_time: float) -> datetime:
    """A Unix time as an aware UTC datetime (sent as ISO 8601, e.g. ``2026-12-02T16:18:45.123Z``)."""
    return datetime.fromtimestamp(unix_time, UTC)


class Progress(_Closed):
    queries_done: int = Field(description="Queries answered so far.")
    queries_total: int = Field(
        description="Queries the job needs (sequential designs: the most it can take)."
    )


class Spend(_Closed):
    cost: Money = Field(
        description="Money billed or possibly billed (timed out), at the vendors' list prices."
    )
    billable_queries: int


class JobSpend(Spend):
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
    spend: JobSpend
    budget_exhausted: bool = Field(description="The job stopped short because its allowance ran out.")
    created_at: datetime = Field(description="When the job was submitted (ISO 8601, UTC).")
    finished_at: datetime | None = Field(description="When it ended (ISO 8601, UTC); null while it runs.")
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


class Remaining(_Closed):
    cost: Money | None = Field(description="Null: no money cap.")
    queries: int | None = Field(description="Null: no query cap.")


class Budget(_Closed):
    tenant: str
    max_cost: Money | None = Field(description="The money cap over all the tenant's jobs; null: none.")
    max_queries: int | None = Field(description="The cap on billable queries; null: none.")
    spent: Spend
    held_by_running_jobs: Spend = Field(description="The allowances running jobs hold (see docs/service.md).")
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
