"""The service's admission on its own: running-job slots, each tenant's money, idempotency keys."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from apiwrap.budgets import BudgetExceeded, Price
from apiwrap.service import ServiceConfig, TenantConfig, VendorConfig
from apiwrap.service._admission import Admission
from apiwrap.service._errors import Busy, IdempotencyKeyReused
from apiwrap.statistics.procedures import CertificationSettings

FIXED = CertificationSettings(vendor="aws", n0=5, n=20, selection="leader")  # 26 queries an image
SEQUENTIAL = CertificationSettings(vendor="aws", design="target", target_radius=0.25, max_queries=100)
PRICES = {"aws": Price(Decimal("1.00"))}  # 1,000 micro-USD per image


def _admission(tmp_path: Path, *, per_tenant: int = 8, max_queries: int | None = None) -> Admission:
    """Alice's budget has ``max_queries``; Bob's has no cap."""
    tenants = {
        "alice": TenantConfig("alice", "unused", max_queries=max_queries),
        "bob": TenantConfig("bob", "unused"),
    }
    config = ServiceConfig(
        runs_dir=tmp_path,
        vendors={"aws": VendorConfig("aws")},
        tenants=tenants,
        max_running_jobs=3,
        max_running_jobs_per_tenant=per_tenant,
    )
    admission = Admission(config, PRICES)
    admission.open({}, [])
    return admission


def test_a_fixed_job_the_tenant_cannot_pay_in_full_is_refused_holding_nothing(tmp_path: Path) -> None:
    admission = _admission(tmp_path, per_tenant=1, max_queries=40)
    with pytest.raises(BudgetExceeded):
        admission.admit("alice", "job-1", FIXED, 2, ("key", "request"))  # 52 queries do not fit in 40
    assert admission.budgets["alice"].snapshot().reserved.queries == 0
    ticket = admission.admit("alice", "job-2", FIXED, 1, ("key", "request"))  # the slot and key are free
    # The allowance adds the retry margin, cut down to what the tenant has left.
    assert (ticket.allowance.queries, ticket.max_queries) == (29, 29)


def test_a_sequential_job_is_admitted_with_what_is_left(tmp_path: Path) -> None:
    admission = _admission(tmp_path, max_queries=40)
    ticket = admission.admit("alice", "job-1", SEQUENTIAL, 1)
    assert (ticket.allowance.queries, ticket.max_queries) == (40, 40)


def test_slots_of_the_server_and_of_each_tenant_are_taken_at_admission(tmp_path: Path) -> None:
    admission = _admission(tmp_path, per_tenant=2)
    held = [admission.admit("alice", f"job-{i}", FIXED, 1) for i in range(2)]
    with pytest.raises(Busy) as tenant_busy:
        admission.admit("alice", "job-3", FIXED, 1)
    admission.admit("bob", "job-4", FIXED, 1)
    with pytest.raises(Busy) as server_busy:
        admission.admit("bob", "job-5", FIXED, 1)
    admission.leave(held[0])
    admission.admit("alice", "job-6", FIXED, 1)
    admission.close()
    admission.leave(held[1])
    with pytest.raises(Busy) as shutting_down:
        admission.admit("alice", "job-7", FIXED, 1)
    codes = [error.value.code for error in (tenant_busy, server_busy, shutting_down)]
    assert codes == ["tenant_busy", "server_busy", "shutting_down"]


async def test_a_withdrawn_admission_gives_back_its_slot_money_and_key(tmp_path: Path) -> None:
    admission = _admission(tmp_path, per_tenant=1, max_queries=40)
    ticket = admission.admit("alice", "job-1", FIXED, 1, ("key", "request"))
    repeat = asyncio.create_task(admission.keys.job("alice", "key", "request"))
    await asyncio.sleep(0)
    assert not repeat.done()  # a repeat waits until the first request's job is stored
    with pytest.raises(IdempotencyKeyReused):
        await admission.keys.job("alice", "key", "another request")

    admission.withdraw(ticket, ("key", "request"))  # storing the job failed
    assert await repeat is None  # so the repeat is admitted anew
    assert admission.budgets["alice"].snapshot().reserved.queries == 0
    admission.admit("alice", "job-2", FIXED, 1, ("key", "request"))


async def test_a_stored_key_names_its_job_and_a_finished_job_is_charged_what_it_spent(tmp_path: Path) -> None:
    admission = _admission(tmp_path, max_queries=100)
    ticket = admission.admit("alice", "job-1", FIXED, 1, ("key", "request"))
    admission.keys.stored("alice", "key")
    assert await admission.keys.job("alice", "key", "request") == "job-1"

    admission.finish(ticket, micro_usd=20_000, queries=20)
    snapshot = admission.budgets["alice"].snapshot()
    assert (snapshot.spent.queries, snapshot.reserved.queries) == (20, 0)
