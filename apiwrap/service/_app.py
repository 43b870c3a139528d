"""The FastAPI application: routes, authentication, and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from apiwrap.adapters import create_adapter
from apiwrap.budgets import PriceTable, format_usd
from apiwrap.denoisers import available_denoisers, load_denoiser
from apiwrap.engine.jobs import adapter_options
from apiwrap.engine.settings import CertificationOptions, resolve_settings
from apiwrap.service._config import ServiceConfig, TenantConfig, hash_key, load_config
from apiwrap.service._errors import (
    EXCEPTION_HANDLERS,
    PROBLEM_MEDIA_TYPE,
    BudgetRanOut,
    Conflict,
    InvalidRequest,
    JobFailed,
    NotFound,
    Unauthorized,
    VendorFailed,
)
from apiwrap.service._http import BodyLimit, RequestContext
from apiwrap.service._jobs import JobManager
from apiwrap.service._logging import log_event
from apiwrap.service._metrics import CONTENT_TYPE, Metrics
from apiwrap.service._models import (
    Budget,
    CertifyAnswer,
    Health,
    ImageOutcome,
    Job,
    JobList,
    JobResults,
    Problem,
    Remaining,
    Spend,
    money,
)
from apiwrap.service._reports import job_report_page
from apiwrap.service._store import Store, private_dir
from apiwrap.service._uploads import IMAGE_MEDIA_TYPES, Upload, check_image, read_upload
from apiwrap.service._vendors import FairGate, SharedVendor
from apiwrap.service.doors import include_doors, open_doors
from apiwrap.statistics.settings import CertificationSettings, Mode

__all__ = ["CertifyQuery", "JobQuery", "create_app"]


class CertifyQuery(CertificationOptions):
    """A request's certification options (apiwrap.engine.settings: the command line's options and
    defaults): query parameters, or text fields of a multipart form; and the vendor to ask."""

    vendor: str | None = Field(
        None, max_length=64, description="A vendor configured on the server (default: the server's)."
    )


class JobQuery(CertifyQuery):
    """A batch job's options: the certification options and the mode."""

    mode: Mode = Field("certify", description="certify (label + radius) or predict (label).")


_BINARY = {"type": "string", "format": "binary"}
# Multipart text fields carry the same parameters as the query (as strings, validated alike).
_PARAM_FIELDS = {name: {"type": "string"} for name in CertifyQuery.model_fields}
_JOB_FIELDS = {name: {"type": "string"} for name in JobQuery.model_fields}
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


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses: each an ``application/problem+json`` :class:`Problem`."""
    return {status: {"model": Problem, "description": _PROBLEM_WHEN[status]} for status in statuses}


_PROBLEM_WHEN = {
    400: "A malformed multipart body, or too many file parts.",
    401: "No API key, or an unknown one.",
    402: "The tenant's budget cannot pay for this (before any query), or ran out during the job.",
    404: "No such job for this tenant.",
    408: "The request body did not arrive in time (a chunk too late, or the whole body).",
    409: "The job is not running.",
    413: "The request body is over the server's limit.",
    415: "Not a PNG, JPEG or WebP image.",
    422: "A bad parameter or header, an image that cannot be decoded, or a reused Idempotency-Key.",
    500: "The server failed.",
    502: "The vendor could not label the image.",
    503: "Too many jobs running, or shutting down; see Retry-After.",
}
# Any request may be refused for its body (408, 413), its parameters (422) or fail (500).
_ANY = (408, 413, 422, 500)
_AUTH_ERRORS = _problems(401, *_ANY)
_JOB_ERRORS = _problems(401, 404, *_ANY)
_CANCEL_ERRORS = _problems(401, 404, 409, *_ANY)
_UPLOAD_ERRORS = _problems(400, 401, 402, 408, 413, 415, 422, 500, 502, 503)
_LOCATION = {"Location": {"description": "The job's status URL.", "schema": {"type": "string"}}}
_ACCEPTED = {
    202: {
        "model": Job,
        "description": "The job runs on: poll it at Location (its results at Location + /results).",
        "headers": _LOCATION,
    }
}
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+)")
#: Where the docs pages' scripts and styles are served from: the only answers a cache may keep.
DOCS_ASSETS = "/docs/assets/"
_TAGS = [
    {"name": "certify", "description": "One image: a certified label and radius, or a prediction."},
    {"name": "jobs", "description": "Batches of images: submit, follow, fetch results and reports, cancel."},
    {"name": "budget", "description": "The tenant's caps, spend and what remains."},
    {"name": "operations", "description": "Liveness and Prometheus metrics, for operators."},
]

_bearer = HTTPBearer(auto_error=False, description="The tenant's API key.")
_metrics_bearer = HTTPBearer(
    auto_error=False, scheme_name="MetricsKey", description="The key of the config's [metrics] table."
)


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
    for tenant in request.app.state.tenants.values():
        # Every tenant is compared, in constant time, so timing tells nothing about the keys.
        if hmac.compare_digest(presented, tenant.key_sha256):
            found = tenant
    if found is None:
        raise Unauthorized("unknown API key")
    return found


Tenant = Annotated[TenantConfig, Depends(_tenant)]
Manager = Annotated[JobManager, Depends(_manager)]
Params = Annotated[CertifyQuery, Query()]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Sent again with the same request, answers for the same job (1 to 255 visible ASCII).",
    ),
]
Prefer = Annotated[
    str | None,
    Header(
        description="RFC 7240: 'respond-async' (202 at once) or 'wait=N' (seconds, at most certify_wait_s)."
    ),
]


def _settings(request: Request, params: CertifyQuery, upload: Upload, mode: Mode) -> CertificationSettings:
    """Query parameters, overridden by the form's text fields, resolved as every door resolves
    them; every value checked (422)."""
    config: ServiceConfig = request.app.state.config
    if upload.fields:
        merged = {**params.model_dump(exclude_unset=True), **upload.fields}
        params = type(params).model_validate(merged)
    if isinstance(params, JobQuery):
        mode = params.mode
    vendor = params.vendor or config.default_vendor or config.vendor_names[0]
    if vendor not in config.vendors:
        raise InvalidRequest(f"vendor {vendor!r} is not offered here; choose one of {config.vendor_names}")
    return resolve_settings(params, vendor=vendor, mode=mode, offered_denoisers=request.app.state.denoisers)


class DenoiserCheck:
    """Whether a shipped denoiser fits a sigma (one trained for another is refused, 422): loaded
    once per (name, sigma) and app, in a worker thread, and logged as ``denoiser.checked``; the
    model is not kept. Called only for an admitted request (see :func:`_submit`): loading and
    exporting a network takes seconds, which a request refused for money or slots must not cost."""

    def __init__(self) -> None:
        self._fits: set[tuple[str, float]] = set()

    async def __call__(self, settings: CertificationSettings) -> None:
        key = (settings.denoiser, settings.sigma)
        if key in self._fits:
            return
        try:
            await run_in_threadpool(load_denoiser, *key)
        except ValueError as exc:  # e.g. trained for another sigma
            raise InvalidRequest(str(exc)) from None
        log_event("denoiser.checked", denoiser=settings.denoiser, sigma=settings.sigma)
        self._fits.add(key)


async def _checked_upload(
    request: Request, params: CertifyQuery, mode: Mode, *, max_files: int
) -> tuple[CertificationSettings, list[tuple[str, bytes]]]:
    config: ServiceConfig = request.app.state.config
    upload = await read_upload(request, max_files=max_files)
    settings = _settings(request, params, upload, mode)
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


def _fingerprint(route: str, settings: CertificationSettings, images: list[tuple[str, bytes]]) -> str:
    """What makes two POSTs the same request: the route, the settings, each image's name and bytes."""
    digest = hashlib.sha256(route.encode())
    digest.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    for name, data in images:
        digest.update(hashlib.sha256(name.encode()).digest() + hashlib.sha256(data).digest())
    return digest.hexdigest()


async def _submit(
    request: Request,
    params: CertifyQuery,
    tenant: TenantConfig,
    manager: JobManager,
    mode: Mode,
    kind: Literal["single", "batch"],
    max_files: int,
    key: str | None,
) -> str:
    settings, images = await _checked_upload(request, params, mode, max_files=max_files)
    idempotency = None if key is None else (key, _fingerprint(request.url.path, settings, images))
    check: DenoiserCheck = request.app.state.denoiser_check
    return await manager.submit(tenant, kind, settings, images, idempotency, admitted=check)


def _accepted(job: Job, preference: str | None = None) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{job.id}", "Retry-After": "1"}
    if preference:
        headers["Preference-Applied"] = preference
    return JSONResponse(job.model_dump(mode="json"), status_code=202, headers=headers)


def _wait_s(prefer: str, config: ServiceConfig) -> tuple[float, str | None]:
    """How long a one-image request waits for its job (RFC 7240 ``Prefer``), and the preference applied."""
    prefer = prefer.lower()
    if "respond-async" in prefer:
        return 0.0, "respond-async"
    if match := _PREFER_WAIT.search(prefer):
        return min(float(match.group(1)), config.certify_wait_s), f"wait={match.group(1)}"
    return config.certify_wait_s, None


async def _one_image(
    request: Request,
    params: CertifyQuery,
    tenant: TenantConfig,
    manager: JobManager,
    mode: Mode,
    key: str | None,
    prefer: str | None,
) -> CertifyAnswer | JSONResponse:
    config: ServiceConfig = request.app.state.config
    job_id = await _submit(request, params, tenant, manager, mode, "single", max_files=1, key=key)
    wait_s, preference = _wait_s(prefer or "", config)
    try:
        # shield: a client that gives up (or our own timeout) leaves the job running, to be fetched.
        await asyncio.wait_for(asyncio.shield(manager.wait(job_id)), timeout=wait_s)
    except TimeoutError:
        return _accepted((await manager.view(tenant.name, job_id)).to_model(), preference)
    view = await manager.view(tenant.name, job_id)
    if view.status == "running":  # the server is stopping; the job resumes when it restarts
        return _accepted(view.to_model())
    if view.status == "cancelled":
        raise Conflict(f"job {job_id} was cancelled")
    if view.status == "failed":
        raise JobFailed(f"job {job_id} failed: {view.error}")
    (result,) = await manager.results(tenant.name, job_id)
    if result["status"] == "failed":
        raise VendorFailed(f"job {job_id}: {result['error']}")
    job = view.to_model()
    if result["status"] == "budget":
        raise BudgetRanOut(
            f"the budget of tenant {tenant.name!r} ran out during job {job_id} before its votes were "
            f"complete; it bought {view.spent_queries} billable queries "
            f"for {format_usd(view.spent_micro_usd)}",
            job=job.model_dump(mode="json"),
            result=result,
        )
    return CertifyAnswer(job=job, result=ImageOutcome.model_validate(result))


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"after:{position}".encode()).decode().rstrip("=")


def _position(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        position = int(text.removeprefix("after:")) if text.startswith("after:") else -1
    except (ValueError, UnicodeDecodeError):
        position = -1
    if position < 0:
        raise InvalidRequest("cursor: not a cursor this server gave (use next_cursor as it is)")
    return position


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The schema, with every error answer under ``application/problem+json``, as it is sent."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            for operations in schema["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        # An HTML route (the job report) documents its errors under text/html by default.
                        if int(status) >= 400 and content:
                            response["content"] = {PROBLEM_MEDIA_TYPE: next(iter(content.values()))}
            app.openapi_schema = schema
        return app.openapi_schema

    return build


async def reload_tenants(app: FastAPI, path: Path) -> None:
    """Read the tenants of the config file at ``path`` again: added ones are served, removed ones
    refused (401) from now on; a removed tenant's running jobs run to their end. A file that no
    longer loads changes nothing (logged as ``tenants.reload_failed``)."""
    try:
        reloaded = await asyncio.to_thread(load_config, path)
    except (ValueError, OSError) as exc:
        log_event("tenants.reload_failed", logging.ERROR, config=str(path), error=str(exc))
        return
    manager: JobManager = app.state.manager
    before: dict[str, TenantConfig] = app.state.tenants
    deferred = await manager.update_tenants(reloaded.tenants)
    app.state.tenants = dict(reloaded.tenants)
    log_event(
        "tenants.reloaded",
        config=str(path),
        added=sorted(reloaded.tenants.keys() - before.keys()),
        removed=sorted(before.keys() - reloaded.tenants.keys()),
        key_changed=sorted(
            name
            for name in reloaded.tenants.keys() & before.keys()
            if reloaded.tenants[name].key_sha256 != before[name].key_sha256
        ),
        caps_wait_for_running_jobs=deferred,
    )


def _reload_on_sighup(app: FastAPI, path: Path) -> Callable[[], None]:
    """Make SIGHUP reload the tenants (the process's main thread only: where signals arrive);
    return what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = loop.create_task(reload_tenants(app, path))
        reloads.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


async def _prune_periodically(manager: JobManager, retention_days: float) -> None:
    while True:
        await manager.prune(retention_days)
        await asyncio.sleep(3600)


def create_app(config: ServiceConfig, config_path: Path | None = None) -> FastAPI:
    """The service for ``config``; its lifespan opens the store and vendors and resumes jobs.

    ``config_path``: the file ``config`` was read from; SIGHUP then reloads its tenants (run in
    the main thread, as ``apiwrap serve`` does; :func:`reload_tenants` does it on request)."""
    metrics = Metrics(tenant_labels=config.metrics.tenant_labels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        private_dir(config.runs_dir)
        store = Store(config.store_path)
        prices = PriceTable.load(config.prices) if config.prices else PriceTable.default()
        vendors: dict[str, SharedVendor] = {}
        try:
            for name, vendor in config.vendors.items():
                limits = vendor.limits
                # Building an SDK client may read files and the environment: not on the loop.
                adapter = await run_in_threadpool(
                    create_adapter, name, **adapter_options(vendor.options, limits.request_timeout_s)
                )
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
            app.state.doors = open_doors(app)
            pruning = None
            if config.retention_days is not None:
                pruning = asyncio.create_task(_prune_periodically(manager, config.retention_days))
            stop_reloading = (lambda: None) if config_path is None else _reload_on_sighup(app, config_path)
            try:
                yield
            finally:
                stop_reloading()
                if pruning is not None:
                    pruning.cancel()
                await app.state.doors.aclose()
                await manager.stop()
        finally:
            for vendor_ in vendors.values():
                await vendor_.adapter.aclose()
            store.close()

    # fastapi-offline: FastAPI whose /docs (Swagger UI) and /redoc pages load their scripts and
    # styles from the package's own copies (under DOCS_ASSETS), not from a CDN.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS.rstrip("/"),
        openapi_tags=_TAGS,
        title="apiwrap",
        summary="Certified labels (label + L2 radius, or abstain) from black-box vision APIs.",
        version="1",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.state.config = config
    app.state.tenants = dict(config.tenants)  # replaced whole by reload_tenants
    app.state.denoisers = available_denoisers()
    app.state.denoiser_check = DenoiserCheck()
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes)
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        body_timeout_s=config.body_timeout_s,
        body_deadline_s=config.body_deadline_s,
        cacheable_prefix=DOCS_ASSETS,
    )
    _routes(app, config, metrics)
    return app


def _routes(app: FastAPI, config: ServiceConfig, metrics: Metrics) -> None:
    """Every route of the service, in one place."""

    @app.post(
        "/v1/certify",
        tags=["certify"],
        openapi_extra=_ONE_IMAGE,
        responses={**_ACCEPTED, **_UPLOAD_ERRORS},
        response_model=CertifyAnswer,
    )
    async def certify(
        request: Request,
        params: Params,
        tenant: Tenant,
        manager: Manager,
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
    ) -> CertifyAnswer | JSONResponse:
        """Certify one image: the label and the L2 radius within which it cannot change, or abstain.

        Waits for the job up to the server's ``certify_wait_s`` (or ``Prefer: wait=N``; ``Prefer:
        respond-async`` does not wait), then answers 202 with the job's Location.
        """
        return await _one_image(request, params, tenant, manager, "certify", idempotency_key, prefer)

    @app.post(
        "/v1/predict",
        tags=["certify"],
        openapi_extra=_ONE_IMAGE,
        responses={**_ACCEPTED, **_UPLOAD_ERRORS},
        response_model=CertifyAnswer,
    )
    async def predict(
        request: Request,
        params: Params,
        tenant: Tenant,
        manager: Manager,
        idempotency_key: IdempotencyKey = None,
        prefer: Prefer = None,
    ) -> CertifyAnswer | JSONResponse:
        """The smoothed classifier's label for one image (no radius), or abstain; waits as certify does."""
        return await _one_image(request, params, tenant, manager, "predict", idempotency_key, prefer)

    @app.post(
        "/v1/jobs",
        tags=["jobs"],
        status_code=202,
        openapi_extra=_MANY_IMAGES,
        responses={**_ACCEPTED, **_UPLOAD_ERRORS},
        response_model=Job,
    )
    async def submit_job(
        request: Request,
        params: Annotated[JobQuery, Query()],
        tenant: Tenant,
        manager: Manager,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Start a batch job on the uploaded images; poll it at the Location returned."""
        max_files = config.max_images_per_job
        job_id = await _submit(
            request, params, tenant, manager, params.mode, "batch", max_files=max_files, key=idempotency_key
        )
        return _accepted((await manager.view(tenant.name, job_id)).to_model())

    @app.get("/v1/jobs", tags=["jobs"], responses=_AUTH_ERRORS)
    async def list_jobs(
        response: Response,
        tenant: Tenant,
        manager: Manager,
        limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page.")] = 50,
        cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of a page.")] = None,
    ) -> JobList:
        """The tenant's jobs, oldest first, a page at a time (follow next_cursor, or the Link header)."""
        views, following = await manager.page(tenant.name, after=_position(cursor), limit=limit)
        next_cursor = None if following is None else _cursor(following)
        if next_cursor is not None:
            response.headers["Link"] = f'</v1/jobs?limit={limit}&cursor={next_cursor}>; rel="next"'
        return JobList(jobs=[view.to_model() for view in views], next_cursor=next_cursor)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses=_JOB_ERRORS)
    async def job_status(job_id: str, tenant: Tenant, manager: Manager) -> Job:
        """A job's status, progress (queries done of total) and spend."""
        return (await manager.view(tenant.name, job_id)).to_model()

    @app.get("/v1/jobs/{job_id}/results", tags=["jobs"], responses=_JOB_ERRORS)
    async def job_results(job_id: str, tenant: Tenant, manager: Manager) -> JobResults:
        """Results of the images finished so far (all of them once the job is done)."""
        view = await manager.view(tenant.name, job_id)
        results = await manager.results(tenant.name, job_id)
        return JobResults(
            job=view.to_model(), results=[ImageOutcome.model_validate(result) for result in results]
        )

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], responses=_CANCEL_ERRORS)
    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], responses=_CANCEL_ERRORS)
    async def cancel_job(
        job_id: str, tenant: Tenant, manager: Manager, idempotency_key: IdempotencyKey = None
    ) -> Job:
        """Stop a running job; what it has paid for stays in its results."""
        await manager.cancel(tenant.name, job_id, idempotency_key)
        return (await manager.view(tenant.name, job_id)).to_model()

    @app.get(
        "/v1/jobs/{job_id}/report",
        tags=["jobs"],
        response_class=HTMLResponse,
        # The page is the response itself: there is no model to derive.
        response_model=None,
        responses=_CANCEL_ERRORS,  # 409 while the job runs
    )
    async def job_report(job_id: str, tenant: Tenant, manager: Manager) -> HTMLResponse:
        """The finished job's report: one self-contained HTML page (settings, spend, curve, images)."""
        return HTMLResponse(await job_report_page(manager, config, tenant.name, job_id))

    @app.get("/v1/budget", tags=["budget"], responses=_AUTH_ERRORS)
    async def budget(tenant: Tenant, manager: Manager) -> Budget:
        """The tenant's caps, spend and what running jobs hold."""
        snapshot = manager.budget(tenant.name).snapshot()
        remaining = snapshot.remaining
        return Budget(
            tenant=tenant.name,
            max_cost=None if snapshot.max_micro_usd is None else money(snapshot.max_micro_usd),
            max_queries=snapshot.max_queries,
            spent=Spend(cost=money(snapshot.spent.micro_usd), billable_queries=snapshot.spent.queries),
            held_by_running_jobs=Spend(
                cost=money(snapshot.reserved.micro_usd), billable_queries=snapshot.reserved.queries
            ),
            remaining=Remaining(
                cost=None if remaining.micro_usd is None else money(remaining.micro_usd),
                queries=remaining.queries,
            ),
        )

    @app.get("/healthz", tags=["operations"], responses=_problems(*_ANY))
    async def healthz(manager: Manager) -> Health:
        """Liveness: the server is up and its lifespan has started."""
        return Health(status="ok", vendors=config.vendor_names, jobs_running=manager.jobs_running)

    def metrics_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)],
    ) -> None:
        expected = config.metrics.key_sha256
        if expected is None:
            raise NotFound("metrics are off: add a [metrics] key with 'apiwrap serve --create-metrics-key'")
        presented = hash_key(credentials.credentials) if credentials else ""
        if not hmac.compare_digest(presented, expected):
            raise Unauthorized("send the metrics key as 'Authorization: Bearer KEY'")

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}, **_JOB_ERRORS},
        dependencies=[Depends(metrics_key)],
    )
    async def metrics_text() -> PlainTextResponse:
        """Prometheus metrics (text format 0.0.4, from prometheus-client); needs the metrics key of
        the [metrics] table."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    include_doors(app)  # the vendors' own APIs (docs/proxy.md)
    _options_routes(app)


def _options_routes(app: FastAPI) -> None:
    """``OPTIONS`` on every path answers 204 with the methods the path allows (RFC 9110 §9.3.7)."""
    allowed: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            allowed.setdefault(route.path, set()).update(route.methods)
    for path, methods in allowed.items():
        app.add_api_route(
            path,
            _options(", ".join(sorted(methods | {"OPTIONS"}))),
            methods=["OPTIONS"],
            include_in_schema=False,
        )


def _options(allow: str) -> Callable[[], Coroutine[Any, Any, Response]]:
    async def options() -> Response:
        return Response(status_code=204, headers={"Allow": allow})

    return options
