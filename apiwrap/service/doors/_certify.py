"""What every vendor door shares: one image, one certification, its headers and its refusals.

A door parses its vendor's request, then hands each image to :meth:`Doors.certify`: the
options are the ``[proxy]`` defaults, over them the tenant's ``proxy`` table, over them the
request's ``X-Apiwrap-*`` headers, resolved by :func:`apiwrap.engine.settings.resolve_settings`
as every door of apiwrap resolves them. The image is checked as ``/v1/certify`` checks it, and
the certification is a one-image job of the :class:`~apiwrap.service._jobs.JobManager`: the
same admission, tenant budget, journal and vendor gate. Identical requests share one job (while
it runs) and one cached certificate (after). Whatever stops a request becomes a
:class:`Refusal`, which each door renders as its vendor's own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from apiwrap.adapters import Rejected, Throttled
from apiwrap.budgets import BudgetExceeded
from apiwrap.denoisers import load_denoiser
from apiwrap.engine.settings import CertificationOptions, SettingsError, parse_options, resolve_settings
from apiwrap.errors import ImageError
from apiwrap.service._config import ServiceConfig, TenantConfig, hash_key
from apiwrap.service._errors import (
    BudgetRanOut,
    Busy,
    Conflict,
    InvalidRequest,
    JobFailed,
    NotFound,
    ServiceError,
    UnsupportedImage,
    VendorFailed,
)
from apiwrap.service._jobs import JobManager
from apiwrap.service._uploads import check_image
from apiwrap.service._vendors import SharedVendor
from apiwrap.service.doors._cache import CertificateCache, certificate_key
from apiwrap.statistics.settings import CertificationSettings

__all__ = [
    "OPTION_HEADER_PREFIX",
    "Certificate",
    "Doors",
    "Refusal",
    "batch_headers",
    "certificate_headers",
    "refusal_of",
    "tenant_by_key",
]

#: ``X-Apiwrap-Target-Radius: 0.5`` sets ``target_radius`` for one request (any certification option).
OPTION_HEADER_PREFIX = "x-apiwrap-"
_OPTION_HEADERS = {
    OPTION_HEADER_PREFIX + name.replace("_", "-"): name for name in CertificationOptions.model_fields
}
#: Results worth serving again: a failure or a budget stop says nothing about the image.
_CACHED_STATUSES = frozenset({"certified", "abstained"})

RefusalKind = Literal[
    "invalid_parameter", "invalid_image", "budget", "busy", "pending", "vendor_failed", "internal"
]


@dataclass(frozen=True)
class Certificate:
    """One image's outcome as a door answers it."""

    result: dict[str, Any]
    settings: CertificationSettings
    job_id: str
    #: No query was bought for this request: the certificate was stored, or being bought by an
    #: identical request.
    cached: bool

    @property
    def certified(self) -> bool:
        return self.result["status"] == "certified"

    @property
    def label(self) -> str:
        return str(self.result["label"])

    @property
    def confidence(self) -> float:
        """The lower confidence bound of the label's probability under noise, 0..1."""
        return float(self.result["p_lower"])


class Refusal(Exception):
    """Why a door request got no certificate, in the terms every vendor has an error for."""

    def __init__(self, kind: RefusalKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.retry_after or 1))


def refusal_of(exc: Exception) -> Refusal | None:
    """The refusal a door answers for an error of the service, the settings or the budget."""
    if isinstance(exc, Refusal):
        return exc
    if isinstance(exc, BudgetExceeded | BudgetRanOut):
        return Refusal("budget", str(exc))
    if isinstance(exc, Busy):
        return Refusal("busy", str(exc), exc.retry_after)
    if isinstance(exc, Throttled):
        return Refusal("busy", str(exc), exc.retry_after)
    if isinstance(exc, UnsupportedImage | ImageError | Rejected):
        return Refusal("invalid_image", str(exc))
    if isinstance(exc, SettingsError | InvalidRequest):
        return Refusal("invalid_parameter", str(exc))
    if isinstance(exc, VendorFailed):
        return Refusal("vendor_failed", str(exc))
    if isinstance(exc, ServiceError):
        return Refusal("internal", str(exc))
    return None


def _header_value(value: object) -> str:
    # Header values are latin-1 on the wire; labels may be any Unicode: percent-encoded UTF-8.
    return quote(str(value), safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")


def certificate_headers(certificate: Certificate) -> dict[str, str]:
    """The certificate beside the vendor's answer (docs/proxy.md lists them)."""
    result, settings = certificate.result, certificate.settings
    headers = {
        "X-Apiwrap-Status": result["status"],
        "X-Apiwrap-Sigma": repr(settings.sigma),
        "X-Apiwrap-Alpha": repr(settings.alpha),
        "X-Apiwrap-Votes": f"{result['votes_for_candidate']}/{result['estimation_votes']}",
        "X-Apiwrap-Queries": str(result["queries"]),
        "X-Apiwrap-Job": certificate.job_id,
        "X-Apiwrap-Cache": "hit" if certificate.cached else "miss",
    }
    if result.get("radius") is not None:
        headers["X-Apiwrap-Radius"] = repr(float(result["radius"]))
    if result.get("label") is not None:
        headers["X-Apiwrap-Label"] = _header_value(result["label"])
    if result.get("p_lower") is not None:
        headers["X-Apiwrap-P-Lower"] = repr(float(result["p_lower"]))
    if result.get("reference_label") is not None:
        headers["X-Apiwrap-Clean-Label"] = _header_value(result["reference_label"])
    if result.get("abstain_reason"):
        headers["X-Apiwrap-Abstain-Reason"] = _header_value(result["abstain_reason"])
    return headers


def batch_headers(certificates: list[Certificate | None]) -> dict[str, str]:
    """Headers of a batch: each header's values in request order, comma-separated ("-" for none)."""
    singles = [certificate_headers(c) if c is not None else {} for c in certificates]
    names = list(dict.fromkeys(name for headers in singles for name in headers))
    return {name: ", ".join(headers.get(name, "-") for headers in singles) for name in names}


def request_options(headers: Headers) -> dict[str, str]:
    """The certification options a request sets through ``X-Apiwrap-*`` headers; unknown ones refused."""
    options = {}
    for name, value in headers.items():
        if not name.startswith(OPTION_HEADER_PREFIX):
            continue
        if name not in _OPTION_HEADERS:
            known = ", ".join(sorted(_OPTION_HEADERS))
            raise Refusal("invalid_parameter", f"unknown header {name}; the options are {known}")
        options[_OPTION_HEADERS[name]] = value
    return options


def tenant_by_key(config: ServiceConfig, key: str) -> TenantConfig | None:
    """The tenant whose API key this is (every tenant compared in constant time, as ``/v1`` does)."""
    presented = hash_key(key)
    found = None
    for tenant in config.tenants.values():
        if hmac.compare_digest(presented, tenant.key_sha256):
            found = tenant
    return found


@functools.lru_cache(maxsize=64)
def _check_denoiser(name: str, sigma: float) -> None:
    """Load the denoiser once to see that it fits sigma (a success is cached; the model is not kept)."""
    load_denoiser(name, sigma)


class Doors:
    """The certifications behind every door; owned by the app's lifespan, used from its loop."""

    def __init__(
        self,
        config: ServiceConfig,
        manager: JobManager,
        vendors: Mapping[str, SharedVendor],
        cache: CertificateCache,
    ) -> None:
        self._config = config
        self._manager = manager
        self._vendors = vendors
        self._cache = cache
        self._running: dict[tuple[str, str], str] = {}  # (tenant, key) -> job id
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def vendor_for(self, door: str) -> str:
        """A door's upstream: the vendor of its name when the server has it, else the default."""
        config = self._config
        if door in config.vendors:
            return door
        return config.default_vendor or config.vendor_names[0]

    def settings(
        self, door: str, tenant: TenantConfig, headers: Headers, offered: list[str]
    ) -> CertificationSettings:
        merged = {**self._config.proxy.options, **tenant.proxy, **request_options(headers)}
        options = parse_options(CertificationOptions, merged)
        return resolve_settings(
            options, vendor=self.vendor_for(door), mode="certify", offered_denoisers=offered
        )

    async def certify(
        self, tenant: TenantConfig, settings: CertificationSettings, image: bytes
    ) -> Certificate:
        """Certify one image (or find its certificate); a :class:`Refusal` or a service error otherwise."""
        await self._check(settings, image)
        vendor = self._vendors[settings.vendor]
        key = certificate_key(settings, image, vendor.adapter.model_options)
        async with self._exclusive((tenant.name, key)):
            job_id = self._running.get((tenant.name, key))
            shared = job_id is not None  # an identical request is buying this certificate
            if job_id is None:
                cached = await self._cached(tenant.name, key, settings)
                if cached is not None:
                    return cached
                job_id = await self._manager.submit(tenant, "single", settings, [("door", image)])
                self._running[(tenant.name, key)] = job_id
                task = asyncio.create_task(self._remember(tenant.name, key, settings.vendor, job_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await self._outcome(tenant, settings, job_id, shared)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._cache.close()

    async def _check(self, settings: CertificationSettings, image: bytes) -> None:
        """The checks of ``/v1/certify``, before anything is stored or sent."""
        try:
            await run_in_threadpool(_check_denoiser, settings.denoiser, settings.sigma)
        except ValueError as exc:  # e.g. trained for another sigma
            raise InvalidRequest(str(exc)) from None
        width, height = await run_in_threadpool(
            check_image, "image", image, max_pixels=self._config.max_image_pixels, size=settings.size
        )
        # Noisy samples barely compress: their PNG is about 3 bytes per pixel.
        self._vendors[settings.vendor].adapter.limits.check(3 * width * height, width, height, "PNG")

    @contextlib.asynccontextmanager
    async def _exclusive(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """One request at a time per (tenant, image and settings): the second finds the first's job."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _cached(self, tenant: str, key: str, settings: CertificationSettings) -> Certificate | None:
        job_id = await asyncio.to_thread(self._cache.lookup, tenant, key)
        if job_id is None:
            return None
        try:
            (result,) = await self._manager.results(tenant, job_id)
        except (NotFound, ValueError):  # the job was pruned since
            await asyncio.to_thread(self._cache.forget, tenant, key)
            return None
        return Certificate(result, settings, job_id, cached=True)

    async def _remember(self, tenant: str, key: str, vendor: str, job_id: str) -> None:
        """Once the job ends (whoever waits for it), cache its certificate; it runs on if clients leave."""
        try:
            await self._manager.wait(job_id)
            view = await self._manager.view(tenant, job_id)
            results = await self._manager.results(tenant, job_id)
            if view.status == "done" and len(results) == 1 and results[0]["status"] in _CACHED_STATUSES:
                versions = results[0]["model_versions"]
                if len(versions) <= 1:  # votes of two models abstain and are not served again
                    version = versions[0] if versions else ""
                    await asyncio.to_thread(self._cache.store, tenant, key, job_id, vendor, version)
        finally:
            self._running.pop((tenant, key), None)

    async def _outcome(
        self, tenant: TenantConfig, settings: CertificationSettings, job_id: str, shared: bool
    ) -> Certificate:
        try:
            # shield: a client that gives up leaves the job running; sent again, it finds the job.
            await asyncio.wait_for(asyncio.shield(self._manager.wait(job_id)), self._config.certify_wait_s)
        except TimeoutError:
            raise Refusal("pending", f"job {job_id} is still certifying; send the request again") from None
        view = await self._manager.view(tenant.name, job_id)
        if view.status == "running":  # the server is stopping; the job resumes when it restarts
            raise Refusal("pending", f"job {job_id} resumes when the server restarts; send the request again")
        if view.status == "cancelled":
            raise Conflict(f"job {job_id} was cancelled")
        if view.status == "failed":
            raise JobFailed(f"job {job_id} failed: {view.error}")
        (result,) = await self._manager.results(tenant.name, job_id)
        if result["status"] == "failed":
            raise VendorFailed(f"job {job_id}: {result['error']}")
        if result["status"] == "budget":
            raise Refusal("budget", f"the budget of tenant {tenant.name!r} ran out during job {job_id}")
        return Certificate(result, settings, job_id, cached=shared)
