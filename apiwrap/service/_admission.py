"""Admission of the service's jobs: running-job slots, each tenant's money, idempotency keys.

Money: each tenant has one :class:`~budgets.Budget` over all its jobs. A job is admitted by
reserving, in that budget, an allowance for the queries it still needs plus a margin for
billed retries (a vendor bills a malformed answer that is then retried), cut down to what the
tenant has left; that allowance becomes the job's own cap, which the job's scheduler enforces
query by query. When the job ends the allowance is released and what the job's ledger says it
spent is charged instead. So concurrent jobs of one tenant can never pass the tenant's cap
together, and an admitted job never waits for another's money. (A job whose vendor bills more
retries than the margin stops early with ``budget`` results, as a job at its cap does.)

A job of the fixed design needs a known number of queries; one the tenant cannot pay for in
full is refused (402) before anything is stored or sent, instead of buying votes that can
never make a certificate. A sequential design may stop early, so it is admitted with what is
left, as a resumed job is.

Admission is atomic: :meth:`Admission.admit` takes the running-job slots (the server's and the
tenant's), the allowance and the ``Idempotency-Key`` synchronously, with no ``await``, so
concurrent requests can never pass a limit together; :meth:`Admission.withdraw` gives all three
back if storing the job fails.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from apiwrap.budgets import Budget, Price, Reservation, from_micro_usd
from apiwrap.service._config import ServiceConfig, TenantConfig
from apiwrap.service._errors import Busy, IdempotencyKeyReused
from apiwrap.service._store import IdempotencyRow
from apiwrap.statistics.procedures import CertificationSettings

__all__ = ["Admission", "IdempotencyKeys", "Ticket"]

#: Allowance for billed retries on top of one billed attempt per query. Throttled and failed
#: attempts are free; only malformed answers are billed and retried, and they are rare.
_RETRY_MARGIN = 0.1


@dataclass
class _Key:
    """An ``Idempotency-Key`` in use: what it names exists once ``stored`` is set."""

    fingerprint: str
    job_id: str
    stored: asyncio.Event = field(default_factory=asyncio.Event)


class IdempotencyKeys:
    """Every tenant's ``Idempotency-Key`` of a request that made or cancelled a job."""

    def __init__(self, rows: Iterable[IdempotencyRow] = ()) -> None:
        self._keys: dict[tuple[str, str], _Key] = {}
        for row in rows:
            known = _Key(row.fingerprint, row.job_id)
            known.stored.set()
            self._keys[(row.tenant, row.key)] = known

    async def job(self, tenant: str, key: str, fingerprint: str) -> str | None:
        """The job of the request first sent with ``key``, once it is stored; None for a new key.

        Raises IdempotencyKeyReused (422) when ``key`` came with another request.
        """
        while (known := self._keys.get((tenant, key))) is not None:
            if known.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {key!r} was sent with another request (job {known.job_id})"
                )
            await known.stored.wait()
            if self._keys.get((tenant, key)) is known:
                return known.job_id
            # The first request with this key failed before it was stored: this one is new.
        return None

    def hold(self, tenant: str, key: str, fingerprint: str, job_id: str) -> None:
        """Take ``key`` for a request not yet stored: a repeat waits for :meth:`stored`."""
        self._keys[(tenant, key)] = _Key(fingerprint, job_id)

    def stored(self, tenant: str, key: str) -> None:
        self._keys[(tenant, key)].stored.set()

    def release(self, tenant: str, key: str) -> None:
        """Give back a held key whose request failed; a repeat of it is admitted anew."""
        self._keys.pop((tenant, key)).stored.set()

    def forget(self, job_ids: set[str]) -> None:
        """Drop the keys of jobs that no longer exist (pruned)."""
        for name, known in list(self._keys.items()):
            if known.job_id in job_ids:
                del self._keys[name]


@dataclass(frozen=True, slots=True)
class Ticket:
    """What one admitted job holds until it ends: a running-job slot and its allowance."""

    tenant: str
    allowance: Reservation
    #: The job's own caps: what it spent before (a resumed job) plus its allowance; None: no cap.
    max_usd: Decimal | None
    max_queries: int | None


class Admission:
    """Admits jobs within the server's and each tenant's running-job limits and money."""

    def __init__(self, config: ServiceConfig, prices: Mapping[str, Price]) -> None:
        self._config = config
        self._prices = prices
        self._budgets: dict[str, Budget] = {}
        # Running-job slots held, by tenant: taken at admission, before the job is stored.
        self._slots: Counter[str] = Counter()
        self._closed = False
        self.keys = IdempotencyKeys()

    def open(self, spent: Mapping[str, tuple[int, int]], keys: Iterable[IdempotencyRow]) -> None:
        """Open every tenant's budget with its (micro-USD, billable queries) spent so far, and the
        keys already stored."""
        for tenant in self._config.tenants.values():
            spent_usd, spent_queries = spent.get(tenant.name, (0, 0))
            self._budgets[tenant.name] = Budget(tenant.max_usd, tenant.max_queries, spent_usd, spent_queries)
        self.keys = IdempotencyKeys(keys)

    def close(self) -> None:
        """Admit nothing more: the server is shutting down."""
        self._closed = True

    @property
    def budgets(self) -> Mapping[str, Budget]:
        return self._budgets

    def update_tenants(
        self, tenants: Mapping[str, TenantConfig], spent: Mapping[str, tuple[int, int]]
    ) -> list[str]:
        """Take a reloaded tenant list: a new tenant's budget opens with ``spent`` (micro-USD,
        billable queries: what its name spent before, if anything); a tenant whose caps changed
        gets them now if no job of it runs, else keeps the old ones (those tenants are returned:
        a reload once their jobs end, or a restart, applies them). A removed tenant's budget
        stays, so that its running jobs end and are charged as usual."""
        deferred = []
        for tenant in tenants.values():
            budget = self._budgets.get(tenant.name)
            if budget is None:
                spent_usd, spent_queries = spent.get(tenant.name, (0, 0))
                self._budgets[tenant.name] = Budget(
                    tenant.max_usd, tenant.max_queries, spent_usd, spent_queries
                )
                continue
            now = budget.snapshot()
            wanted = Budget(tenant.max_usd, tenant.max_queries).snapshot()
            if (now.max_micro_usd, now.max_queries) == (wanted.max_micro_usd, wanted.max_queries):
                continue
            if self._slots[tenant.name] or now.reserved.queries or now.reserved.micro_usd:
                deferred.append(tenant.name)
                continue
            self._budgets[tenant.name] = Budget(
                tenant.max_usd, tenant.max_queries, now.spent.micro_usd, now.spent.queries
            )
        return deferred

    def admit(
        self,
        tenant: str,
        job_id: str,
        settings: CertificationSettings,
        images: int,
        idempotency: tuple[str, str] | None = None,
    ) -> Ticket:
        """Take a running-job slot, the job's allowance and its ``Idempotency-Key`` (key,
        fingerprint), or raise Busy (503) or BudgetExceeded (402) holding nothing.

        No ``await`` in here, so nothing can come between the checks and the taking; call it
        right after :meth:`IdempotencyKeys.job` found no job for the key.
        """
        self._take_slot(tenant)
        try:
            ticket = self._allow(tenant, settings, images, (0, 0, 0), strict=True)
        except BaseException:
            self._slots[tenant] -= 1
            raise
        if idempotency is not None:
            self.keys.hold(tenant, idempotency[0], idempotency[1], job_id)
        return ticket

    def withdraw(self, ticket: Ticket, idempotency: tuple[str, str] | None = None) -> None:
        """Give back what :meth:`admit` took: storing the job failed."""
        self._budgets[ticket.tenant].release(ticket.allowance)
        self._slots[ticket.tenant] -= 1
        if idempotency is not None:
            self.keys.release(ticket.tenant, idempotency[0])

    def resume(
        self, tenant: str, settings: CertificationSettings, images: int, prior: tuple[int, int, int]
    ) -> Ticket:
        """Admit a job a previous process left running, after ``prior`` (micro-USD spent, billable
        queries, queries answered): it holds a slot, but is never refused one."""
        ticket = self._allow(tenant, settings, images, prior)
        self._slots[tenant] += 1
        return ticket

    def finish(self, ticket: Ticket, micro_usd: int, queries: int) -> None:
        """Swap the job's allowance for what it spent in this run (at most the allowance: its cap
        held) and free its slot."""
        budget = self._budgets[ticket.tenant]
        budget.release(ticket.allowance)
        if queries > 0:
            budget.settle(budget.reserve(micro_usd, queries), billed=True)
        self.leave(ticket)

    def leave(self, ticket: Ticket) -> None:
        """Free the job's slot and nothing else: it stops with the server and resumes at its next start."""
        self._slots[ticket.tenant] -= 1

    def _take_slot(self, tenant: str) -> None:
        """Hold one running-job slot of the server and of ``tenant``, or raise Busy (503)."""
        if self._closed:
            raise Busy("the server is shutting down", retry_after=5, code="shutting_down")
        held = sum(self._slots.values())
        if held >= self._config.max_running_jobs:
            raise Busy(f"{held} jobs are running; try again shortly", retry_after=5, code="server_busy")
        own = self._slots[tenant]
        if own >= self._config.max_running_jobs_per_tenant:
            raise Busy(
                f"tenant {tenant!r} has {own} jobs running; try again shortly",
                retry_after=5,
                code="tenant_busy",
            )
        self._slots[tenant] += 1

    def _allow(
        self,
        tenant: str,
        settings: CertificationSettings,
        images: int,
        prior: tuple[int, int, int],
        *,
        strict: bool = False,
    ) -> Ticket:
        """Reserve the job's allowance in the tenant's budget.

        ``strict``: a fixed design must fit in full (one attempt per query), or BudgetExceeded
        is raised with the budget's own figures and nothing is held.
        """
        budget = self._budgets[tenant]
        price = self._prices[settings.vendor].micro_usd_per_image
        prior_usd, prior_queries, answered = prior
        remaining = max(0, images * settings.queries_per_image - answered)
        if strict and settings.design == "fixed" and remaining > 0:
            # Raises BudgetExceeded (402) if the queries the design cannot do without do not fit.
            budget.require(price * remaining, remaining)
        need = max(1, math.ceil(remaining * (1 + _RETRY_MARGIN)))
        headroom = budget.remaining
        grant = need
        if headroom.queries is not None:
            grant = min(grant, headroom.queries)
        if headroom.micro_usd is not None and price > 0:
            grant = min(grant, headroom.micro_usd // price)
        # Reserving at least one query makes an exhausted tenant fail with the budget's own figures.
        allowance = budget.reserve(price * max(grant, 1), max(grant, 1))
        return Ticket(
            tenant=tenant,
            allowance=allowance,
            max_usd=None if budget.max_usd is None else from_micro_usd(prior_usd + allowance.cost_micro_usd),
            max_queries=None if budget.max_queries is None else prior_queries + allowance.queries,
        )
