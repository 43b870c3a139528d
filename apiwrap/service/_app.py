"""The FastAPI application: routes, authentication, and the lifespan that owns every resource."""

from __future__ import annotations

import functools
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from apiwrap.adapters import create_adapter
from apiwrap.budgets import BudgetExceeded, PriceTable, format_usd
from apiwrap.denoisers import available_denoisers
from apiwrap.engine.jobs import load_denoise
from apiwrap.service._config import ServiceConfig, TenantConfig, hash_key
from apiwrap.service._errors import (
    EXCEPTION_HANDLERS,
    Busy,
    Conflict,
    InvalidRequest,
    JobFailed,
    Unauthorized,
    VendorFailed,
)
from apiwrap.service._jobs import JobManager
from apiwrap.service._metrics import CONTENT_TYPE, Metrics
from apiwrap.service._store import Store
from apiwrap.service._uploads import IMAGE_MEDIA_TYPES, BodyLimit, Upload, check_image, read_upload
from apiwrap.service._vendors import FairGate, SharedVendor
from apiwrap.statistics.procedures import CertificationSettings, Design, Mode, Selection

__all__ = ["CertifyParams", "JobParams", "create_app"]


class CertifyParams(BaseModel):
    """Certification parameters: query parameters, or text fields of a multipart form."""

    model_config = ConfigDict(extra="forbid")

    vendor: str | None = Field(None, max_length=64, description="A vendor configured on the server.")
    sigma: float = Field(0.25, gt=0, le=4.0, description="Noise level in [0,1] pixel units.")
    n0: int = Field(20, ge=1, le=10_000, description="Selection samples (certify only).")
    n: int = Field(100, ge=1, le=100_000, description="Estimation samples.")
    alpha: float = Field(0.001, gt=0, lt=1, description="Failure probability per image.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Noise seed.")
    denoiser: str = Field("none", max_length=100, description="A denoiser shipped with the server.")
    size: int | None = Field(None, ge=8, le=1024, description="Resize and centre-crop to SIZE first.")
    design: Design = Field("fixed", description="fixed (Cohen's n0 + n), or sequential: target, best.")
    target_radius: float | None = Field(None, gt=0, le=100, description="The target design's radius.")
    max_queries: int = Field(
        400, ge=1, le=100_000, description="Sequential designs: queries per image at most."
    )
    selection: Selection = Field("leader", description="Sequential designs: how the candidate is chosen.")
    selection_lead: int = Field(2, ge=1, le=1000, description="Sequential designs: lead that ends selection.")


class JobParams(CertifyParams):
    """A batch job's parameters: the certification parameters and the mode."""

    mode: Mode = Field("certify", description="certify (label + radius) or predict (label).")


_BINARY = {"type": "string", "format": "binary"}
# Multipart text fields carry the same parameters as the query (as strings, validated alike).
_PARAM_FIELDS = {name: {"type": "string"} for name in CertifyParams.model_fields}
_JOB_FIELDS = {name: {"type": "string"} for name in JobParams.model_fields}
_ONE_IMAGE = {
    "requestBody": {
        "required": True,
        "content": {
            **{media: {"schema": _BINARY} for media in IMAGE_MEDIA_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": _BINARY, **_PARAM_FIELDS},
                }
            },
        },
    }
}
_MANY_IMAGES = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": _BINARY}, **_JOB_FIELDS},
                }
            }
        },
    }
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {}},
                }
            }
        },
    }


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: _error("No API key, or an unknown one.")}
_JOB_ERRORS = {**_AUTH_ERRORS, 404: _error("No such job for this tenant.")}
_UPLOAD_ERRORS = {
    400: _error("A malformed multipart body, or too many file parts."),
    **_AUTH_ERRORS,
    402: _error("The tenant's budget cannot pay for this."),
    413: _error("The request body is over the server's limit."),
    415: _error("Not a PNG, JPEG or WebP image."),
    422: _error("A bad parameter, or an image that cannot be decoded."),
    502: _error("The vendor could not label the image."),
    503: _error("Too many jobs running, or shutting down; see Retry-After."),
}

_bearer = HTTPBearer(auto_error=False, description="The tenant's API key.")


def _manager(request: Request) -> JobManager:
    manager: JobManager = request.app.state.manager
    return manager


def _tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> TenantConfig:
    if credentials is None:
        raise Unauthorized("send the tenant's API key as 'Authorization: Bearer KEY'")
    presented = hash_key(credentials.credentials)
    found = None
    for tenant in request.app.state.config.tenants.values():
        # Every tenant is compared, in constant time, so timing tells nothing about the keys.
        if hmac.compare_digest(presented, tenant.key_sha256):
            found = tenant
    if found is None:
        raise Unauthorized("unknown API key")
    return found


Tenant = Annotated[TenantConfig, Depends(_tenant)]
Manager = Annotated[JobManager, Depends(_manager)]
Params = Annotated[CertifyParams, Query()]


def _settings(request: Request, params: CertifyParams, upload: Upload, mode: Mode) -> CertificationSettings:
    """Query parameters, overridden by the form's text fields; every value checked (422)."""
    config: ServiceConfig = request.app.state.config
    if upload.fields:
        merged = {**params.model_dump(exclude_unset=True), **upload.fields}
        params = type(params).model_validate(merged)
    if isinstance(params, JobParams):
        mode = params.mode
    vendor = params.vendor or config.default_vendor or config.vendor_names[0]
    if vendor not in config.vendors:
        raise InvalidRequest(f"vendor {vendor!r} is not offered here; choose one of {config.vendor_names}")
    if params.denoiser not in request.app.state.denoisers:
        raise InvalidRequest(
            f"denoiser {params.denoiser!r} is not offered here; choose one of {request.app.state.denoisers}"
        )
    try:
        return CertificationSettings(
            vendor=vendor,
            sigma=params.sigma,
            n0=params.n0 if mode == "certify" else 0,
            n=params.n,
            alpha=params.alpha,
            seed=params.seed,
            denoiser=params.denoiser,
            size=params.size,
            mode=mode,
            design=params.design,
            target_radius=params.target_radius,
            max_queries=params.max_queries,
            selection=params.selection,
            selection_lead=params.selection_lead,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


@functools.lru_cache(maxsize=64)
def _check_denoiser(name: str, sigma: float) -> None:
    """Load the denoiser once to see that it fits sigma (a success is cached; the model is not kept)."""
    load_denoise(name, sigma)


async def _checked_upload(
    request: Request, params: CertifyParams, mode: Mode, *, max_files: int
) -> tuple[CertificationSettings, list[tuple[str, bytes]]]:
    config: ServiceConfig = request.app.state.config
    upload = await read_upload(request, max_files=max_files)
    settings = _settings(request, params, upload, mode)
    try:
        await run_in_threadpool(_check_denoiser, settings.denoiser, settings.sigma)
    except ValueError as exc:  # e.g. trained for another sigma
        raise InvalidRequest(str(exc)) from None
    limits = request.app.state.vendors[settings.vendor].adapter.limits
    for name, data in upload.images:
        width, height = await run_in_threadpool(
            check_image, name, data, max_pixels=config.max_image_pixels, size=settings.size
        )
        # The samples must pass the vendor's own limits, or every query would be a free refusal
        # that still costs the server its work. Noisy samples barely compress: an 8-bit RGB PNG
        # of one is about its raw size. Rejected: 422 by the error table.
        limits.check(3 * width * height, width, height, "PNG")
    return settings, upload.images


async def _one_image(
    request: Request, params: CertifyParams, tenant: TenantConfig, manager: JobManager, mode: Mode
) -> dict[str, Any]:
    settings, images = await _checked_upload(request, params, mode, max_files=1)
    job_id = await manager.submit(tenant, "single", settings, images)
    await manager.wait(job_id)
    view = await manager.view(tenant.name, job_id)
    if view.status == "running":  # the server is stopping; the job resumes when it restarts
        raise Busy(f"the server is shutting down; job {job_id} resumes after the restart", retry_after=30)
    if view.status == "cancelled":
        raise Conflict(f"job {job_id} was cancelled")
    if view.status == "failed":
        raise JobFailed(f"job {job_id} failed: {view.error}")
    results = await manager.results(tenant.name, job_id)
    result = results[0]
    if result["status"] == "failed":
        raise VendorFailed(f"job {job_id}: {result['error']}")
    if result["status"] == "budget":
        raise BudgetExceeded(
            f"the budget of tenant {tenant.name!r} ran out during job {job_id} before its votes were "
            f"complete; it spent {format_usd(view.spent_micro_usd)} ({view.spent_queries} billable queries)"
        )
    return {"job": view.to_json(), "result": result}


def create_app(config: ServiceConfig) -> FastAPI:
    """The service for ``config``; its lifespan opens the store and vendors and resumes jobs."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(config.store_path)
        prices = PriceTable.load(config.prices) if config.prices else PriceTable.default()
        vendors: dict[str, SharedVendor] = {}
        try:
            for name, vendor in config.vendors.items():
                limits = vendor.limits
                # Building an SDK client may read files and the environment: not on the loop.
                adapter = await run_in_threadpool(create_adapter, name, **vendor.options)
                vendors[name] = SharedVendor(
                    name=name,
                    adapter=adapter,
                    gate=FairGate(limits.concurrency, limits.requests_per_second),
                    price=prices.price(name),
                    concurrency=limits.concurrency,
                    request_timeout_s=limits.request_timeout_s,
                )
            app.state.vendors = vendors
            manager = JobManager(config, store, vendors, metrics, prices)
            await manager.start()
            app.state.manager = manager
            try:
                yield
            finally:
                await manager.stop()
        finally:
            for vendor_ in vendors.values():
                await vendor_.adapter.aclose()
            store.close()

    app = FastAPI(
        title="apiwrap",
        summary="Certified labels (label + L2 radius, or abstain) from black-box vision APIs.",
        version="1",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.config = config
    app.state.denoisers = available_denoisers()
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)

    @app.post("/v1/certify", openapi_extra=_ONE_IMAGE, responses=_UPLOAD_ERRORS)
    async def certify(request: Request, params: Params, tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """Certify one image: the label and the L2 radius within which it cannot change, or abstain."""
        return await _one_image(request, params, tenant, manager, "certify")

    @app.post("/v1/predict", openapi_extra=_ONE_IMAGE, responses=_UPLOAD_ERRORS)
    async def predict(request: Request, params: Params, tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """The smoothed classifier's label for one image (no radius), or abstain."""
        return await _one_image(request, params, tenant, manager, "predict")

    @app.post("/v1/jobs", status_code=202, openapi_extra=_MANY_IMAGES, responses=_UPLOAD_ERRORS)
    async def submit_job(
        request: Request,
        params: Annotated[JobParams, Query()],
        tenant: Tenant,
        manager: Manager,
    ) -> JSONResponse:
        """Start a batch job on the uploaded images; poll it at the Location returned."""
        max_files = config.max_images_per_job
        settings, images = await _checked_upload(request, params, params.mode, max_files=max_files)
        job_id = await manager.submit(tenant, "batch", settings, images)
        view = await manager.view(tenant.name, job_id)
        return JSONResponse(view.to_json(), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})

    @app.get("/v1/jobs", responses=_AUTH_ERRORS)
    async def list_jobs(tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """The tenant's jobs, oldest first."""
        return {"jobs": [view.to_json() for view in await manager.views(tenant.name)]}

    @app.get("/v1/jobs/{job_id}", responses=_JOB_ERRORS)
    async def job_status(job_id: str, tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """A job's status, progress (queries done of total) and spend."""
        return (await manager.view(tenant.name, job_id)).to_json()

    @app.get("/v1/jobs/{job_id}/results", responses=_JOB_ERRORS)
    async def job_results(job_id: str, tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """Results of the images finished so far (all of them once the job is done)."""
        view = await manager.view(tenant.name, job_id)
        return {"job": view.to_json(), "results": await manager.results(tenant.name, job_id)}

    @app.post("/v1/jobs/{job_id}/cancel", responses={**_JOB_ERRORS, 409: _error("The job is not running.")})
    @app.delete("/v1/jobs/{job_id}", responses={**_JOB_ERRORS, 409: _error("The job is not running.")})
    async def cancel_job(job_id: str, tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """Stop a running job; what it has paid for stays in its results."""
        await manager.cancel(tenant.name, job_id)
        return (await manager.view(tenant.name, job_id)).to_json()

    # The job report (docs/reports.md), built by apiwrap.reports.service; self-contained in this block.
    from fastapi.responses import HTMLResponse

    from apiwrap.reports.service import job_report_page

    @app.get(
        "/v1/jobs/{job_id}/report",
        response_class=HTMLResponse,
        # The annotation names a class imported in this block, which FastAPI cannot resolve: the
        # page is the response itself, there is no model to derive.
        response_model=None,
        responses={**_JOB_ERRORS, 409: _error("The job is still running.")},
    )
    async def job_report(job_id: str, tenant: Tenant, manager: Manager) -> HTMLResponse:
        """The finished job's report: one self-contained HTML page (settings, spend, curve, images)."""
        return HTMLResponse(await job_report_page(manager, config, tenant.name, job_id))

    @app.get("/v1/budget", responses=_AUTH_ERRORS)
    async def budget(tenant: Tenant, manager: Manager) -> dict[str, Any]:
        """The tenant's caps, spend and what running jobs hold."""
        snapshot = manager.budget(tenant.name).snapshot()
        remaining = snapshot.remaining
        return {
            "tenant": tenant.name,
            "max_usd": None if snapshot.max_micro_usd is None else format_usd(snapshot.max_micro_usd),
            "max_queries": snapshot.max_queries,
            "spent": {
                "usd": format_usd(snapshot.spent.micro_usd),
                "billable_queries": snapshot.spent.queries,
            },
            "held_by_running_jobs": {
                "usd": format_usd(snapshot.reserved.micro_usd),
                "queries": snapshot.reserved.queries,
            },
            "remaining": {
                "usd": None if remaining.micro_usd is None else format_usd(remaining.micro_usd),
                "queries": remaining.queries,
            },
        }

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness: the server is up and its lifespan has started."""
        return {"status": "ok", "vendors": config.vendor_names, "jobs_running": metrics.jobs_running}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text() -> PlainTextResponse:
        """Prometheus metrics (text format 0.0.4)."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    return app
