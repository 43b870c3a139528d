"""Certifying from Python: :class:`Certifier` (async) and :func:`certify` / :func:`predict` (blocking).

Each call is one job of the engine (:func:`apiwrap.engine.jobs.run_job`), its settings resolved
exactly as the command line and the service resolve theirs
(:func:`apiwrap.engine.settings.resolve_settings`: the same defaults, the recommended denoiser,
the design and sigma inferred the same way), with a journal and a resume: the same ``job`` name
in the same ``runs_dir`` resumes without re-buying any answered query. Images may be paths
(folders are searched as on the command line), encoded bytes, PIL images or ``HxWx3`` arrays
(``uint8``, or floats in ``[0, 1]``); in-memory images are encoded once to PNG and certified as
those 8-bit pixels.

    import apiwrap

    job = apiwrap.certify("samples/ILSVRC2012_val_00006696.png", n=20, job="demo")
    print(job.settings.denoiser, job.results[0].label, job.results[0].radius, job.spent_usd)
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from apiwrap.adapters import Adapter, check_adapter, create_adapter
from apiwrap.budgets import PriceTable
from apiwrap.engine.images import encode_png, find_images, to_uint8
from apiwrap.engine.jobs import adapter_options, job_spec, run_job
from apiwrap.engine.settings import (
    CertificationOptions,
    ConnectionOptions,
    JobOptions,
    parse_options,
    resolve_settings,
    settings_options,
)
from apiwrap.errors import ConfigurationError, ImageError
from apiwrap.statistics.procedures import ImageResult
from apiwrap.statistics.settings import CertificationSettings, Mode

__all__ = [
    "Certifier",
    "ImageInput",
    "JobResult",
    "certify",
    "predict",
]

#: One image: a file path, encoded bytes (PNG, JPEG, WebP), a PIL image or an HxWx3 array.
ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
#: One image, several, a batch array (NxHxWx3), or images by the names the journal keeps.
Images = ImageInput | Iterable[ImageInput] | Mapping[str, ImageInput]
Money = Decimal | str | int | float

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class JobResult:
    """What one job gave: a result per image, in the order given, and what it cost."""

    job: str
    #: The settings the job ran with, every default and rule applied (what its journal binds).
    settings: CertificationSettings
    results: list[ImageResult]
    journal: Path
    #: Money and billable queries the job has spent, earlier runs of a resumed job included.
    spent_usd: Decimal
    billable_queries: int
    #: The part of the spend whose answers never came back in time (possibly billed): counted
    #: against the caps, though the vendor may not have charged it.
    possibly_billed_usd: Decimal
    possibly_billed_queries: int
    budget_exhausted: bool
    #: Requests sent by this run (a resumed job re-sends nothing already answered).
    requests: int
    seconds: float


class Certifier:
    """One vendor, opened once and used for any number of jobs; an async context manager.

    ``vendor`` is a registered name (``local``, ``aws``, ``google``, ``azure``, ``clarifai``,
    ``http``; ``vendor_options`` go to its factory) or an object with the
    :class:`~apiwrap.adapters.Adapter` interface, which stays open: its owner closes it.
    ``emulate=True`` starts the named vendor's wire-protocol emulator on 127.0.0.1 for the
    life of the certifier. The remaining arguments are the command line's rate and retry
    options (``request_timeout``: seconds before a request is abandoned as possibly billed;
    checked as there: a bad value raises :class:`~apiwrap.engine.settings.SettingsError`),
    and ``prices`` a price file or table.
    """

    def __init__(
        self,
        vendor: str | Adapter = "local",
        *,
        runs_dir: str | os.PathLike[str] = "runs",
        vendor_options: Mapping[str, Any] | None = None,
        emulate: bool = False,
        prices: PriceTable | str | os.PathLike[str] | None = None,
        concurrency: int = 8,
        tps: float | None = None,
        max_attempts: int = 6,
        request_timeout: float = 30.0,
    ) -> None:
        if isinstance(vendor, str):
            self.vendor = vendor
        else:
            check_adapter(vendor)
            if vendor_options or emulate:
                raise ConfigurationError("vendor_options and emulate apply to a vendor given by name")
            self.vendor = vendor.name
        self._given = None if isinstance(vendor, str) else vendor
        self._vendor_options = dict(vendor_options or {})
        self._emulate = emulate
        self._prices = prices if isinstance(prices, PriceTable) or prices is None else PriceTable.load(prices)
        self._runs_dir = Path(runs_dir)
        self._connection = parse_options(
            ConnectionOptions,
            {
                "tps": tps,
                "concurrency": concurrency,
                "max_attempts": max_attempts,
                "request_timeout": request_timeout,
            },
        )
        self._adapter: Adapter | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Certifier:
        try:
            self._adapter = self._given if self._given is not None else await self._open_vendor()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._adapter = None
        await self._stack.aclose()

    async def _open_vendor(self) -> Adapter:
        options = dict(self._vendor_options)
        if self._emulate:
            from apiwrap.adapters.emulators import VENDORS, emulator

            if self.vendor not in VENDORS:
                raise ConfigurationError(
                    f"no emulator for {self.vendor!r}; choose one of {', '.join(VENDORS)}"
                )
            options["endpoint"] = self._stack.enter_context(emulator(self.vendor))
        # Building an adapter can load a model (local) or read credential files: off the loop.
        adapter = await asyncio.to_thread(
            create_adapter, self.vendor, **adapter_options(options, self._connection.request_timeout)
        )
        self._stack.push_async_callback(adapter.aclose)
        return adapter

    async def certify(
        self,
        images: Images,
        *,
        settings: CertificationSettings | None = None,
        job: str | None = None,
        max_usd: Money | None = None,
        max_job_queries: int | None = None,
        allocate: bool = True,
        force_denoiser: bool = False,
        on_query: Callable[[], None] | None = None,
        **options: Any,
    ) -> JobResult:
        """Certify each image's label with an L2 radius, or abstain (``apiwrap certify``).

        Settings come as keyword arguments (:class:`~apiwrap.engine.settings.CertificationOptions`:
        the command line's options and defaults) or as ``settings`` (a ``JobResult.settings``, to
        run the same settings again); ``max_usd`` and ``max_job_queries`` cap the job's spend;
        ``allocate`` spends a sequential job's budget on likely certificates first. ``job`` names
        the journal; the same name resumes.
        """
        chosen = _settings("certify", self.vendor, settings, options)
        limits = {"max_usd": max_usd, "max_job_queries": max_job_queries, "allocate": allocate}
        return await self._run(chosen, images, job, limits, force_denoiser, on_query)

    async def predict(
        self,
        images: Images,
        *,
        settings: CertificationSettings | None = None,
        job: str | None = None,
        max_usd: Money | None = None,
        max_job_queries: int | None = None,
        force_denoiser: bool = False,
        on_query: Callable[[], None] | None = None,
        **options: Any,
    ) -> JobResult:
        """The smoothed classifier's label for each image, or abstain (``apiwrap predict``)."""
        chosen = _settings("predict", self.vendor, settings, options)
        limits = {"max_usd": max_usd, "max_job_queries": max_job_queries}
        return await self._run(chosen, images, job, limits, force_denoiser, on_query)

    async def _run(
        self,
        settings: CertificationSettings,
        images: Images,
        job: str | None,
        limits: dict[str, Any],
        force_denoiser: bool,
        on_query: Callable[[], None] | None,
    ) -> JobResult:
        if self._adapter is None:
            raise RuntimeError("use the certifier inside 'async with Certifier(...) as certifier:'")
        run = parse_options(JobOptions, {"job": job, "force_denoiser": force_denoiser, **limits})
        named = _named_images(images)
        spec = job_spec(settings, run, self._connection, runs_dir=self._runs_dir)
        report = await run_job(
            spec, named, on_query=on_query, adapter=self._adapter, price_table=self._prices
        )
        return JobResult(
            job=spec.job,
            settings=spec.settings,
            results=report.results,
            journal=report.journal,
            spent_usd=report.budget.spent.usd,
            billable_queries=report.budget.spent.queries,
            possibly_billed_usd=report.budget.possibly_billed.usd,
            possibly_billed_queries=report.budget.possibly_billed.queries,
            budget_exhausted=report.budget_exhausted,
            requests=report.requests,
            seconds=report.seconds,
        )


def certify(
    images: Images,
    *,
    vendor: str | Adapter = "local",
    settings: CertificationSettings | None = None,
    job: str | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    max_usd: Money | None = None,
    max_job_queries: int | None = None,
    vendor_options: Mapping[str, Any] | None = None,
    emulate: bool = False,
    prices: PriceTable | str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    tps: float | None = None,
    max_attempts: int = 6,
    request_timeout: float = 30.0,
    allocate: bool = True,
    force_denoiser: bool = False,
    **options: Any,
) -> JobResult:
    """:meth:`Certifier.certify` for code with no event loop running (arguments as there and on Certifier)."""

    async def main() -> JobResult:
        async with Certifier(
            vendor,
            runs_dir=runs_dir,
            vendor_options=vendor_options,
            emulate=emulate,
            prices=prices,
            concurrency=concurrency,
            tps=tps,
            max_attempts=max_attempts,
            request_timeout=request_timeout,
        ) as certifier:
            return await certifier.certify(
                images,
                settings=settings,
                job=job,
                max_usd=max_usd,
                max_job_queries=max_job_queries,
                allocate=allocate,
                force_denoiser=force_denoiser,
                **options,
            )

    return _run_blocking("certify", main)


def predict(
    images: Images,
    *,
    vendor: str | Adapter = "local",
    settings: CertificationSettings | None = None,
    job: str | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    max_usd: Money | None = None,
    max_job_queries: int | None = None,
    vendor_options: Mapping[str, Any] | None = None,
    emulate: bool = False,
    prices: PriceTable | str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    tps: float | None = None,
    max_attempts: int = 6,
    request_timeout: float = 30.0,
    force_denoiser: bool = False,
    **options: Any,
) -> JobResult:
    """:meth:`Certifier.predict` for code with no event loop running (arguments as there and on Certifier)."""

    async def main() -> JobResult:
        async with Certifier(
            vendor,
            runs_dir=runs_dir,
            vendor_options=vendor_options,
            emulate=emulate,
            prices=prices,
            concurrency=concurrency,
            tps=tps,
            max_attempts=max_attempts,
            request_timeout=request_timeout,
        ) as certifier:
            return await certifier.predict(
                images,
                settings=settings,
                job=job,
                max_usd=max_usd,
                max_job_queries=max_job_queries,
                force_denoiser=force_denoiser,
                **options,
            )

    return _run_blocking("predict", main)


def _run_blocking(name: str, main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop running: this call may run one
    else:
        # asyncio.run would fail here too, less helpfully; the coroutine is never created.
        raise RuntimeError(
            f"apiwrap.{name}() runs its own event loop and cannot run inside one (async code, Jupyter): "
            f"use 'async with apiwrap.Certifier(...) as certifier: await certifier.{name}(...)'"
        )
    return asyncio.run(main())


def _settings(
    mode: Mode, vendor: str, settings: CertificationSettings | None, options: dict[str, Any]
) -> CertificationSettings:
    """The job's settings, resolved as every door resolves them, from keyword options or ``settings``."""
    if unknown := sorted(options.keys() - CertificationOptions.model_fields.keys()):
        raise TypeError(f"{mode}() got unexpected keyword argument(s): {', '.join(unknown)}")
    if settings is not None:
        if options:
            raise TypeError(f"{mode}() takes settings= or keyword settings, not both")
        if settings.mode != mode:
            raise ConfigurationError(f"these settings are for {settings.mode}(), not {mode}()")
        if settings.vendor != vendor:
            raise ConfigurationError(
                f"the settings name vendor {settings.vendor!r}; the certifier uses {vendor!r}"
            )
        # Checked by the same rules as keyword options; fields the procedure never reads are dropped.
        options = settings_options(settings)
    return resolve_settings(parse_options(CertificationOptions, options), vendor=vendor, mode=mode)


def _named_images(images: Images) -> list[tuple[str, Path | bytes]]:
    """Each image with the name the journal keeps it under; in-memory images encoded to PNG once."""
    if isinstance(images, Mapping):
        given: list[tuple[str | None, Any]] = list(images.items())
    elif _is_one_image(images):
        given = [(None, images)]
    else:
        given = [(None, image) for image in images]  # type: ignore[union-attr]
    named: list[tuple[str, Path | bytes]] = []
    for index, (name, image) in enumerate(given):
        if isinstance(image, str | os.PathLike):
            path = Path(image)
            if name is None:
                named.extend((str(file), file) for file in find_images([path]))
            else:
                named.append((name, path))
        else:
            label = name or f"image-{index}"
            named.append((label, _encoded(image, label)))
    if not named:
        raise ConfigurationError("no images given (folders are searched for .png, .jpg, .jpeg, .webp)")
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            # The journal keeps votes by image name: two images under one name would share them.
            raise ConfigurationError(f"image {name!r} is given twice; give each image once")
        seen.add(name)
    return named


def _is_one_image(images: Images) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim != 4  # NxHxWx3 is a batch
    return isinstance(images, str | os.PathLike | bytes | bytearray | memoryview | Image.Image)


def _encoded(image: object, label: str) -> bytes:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)  # already encoded: decoded and checked like a file's contents
    if isinstance(image, Image.Image):
        # Saved losslessly in its own mode, so alpha, palette and 16-bit images are converted
        # to RGB exactly as the same image read from a file would be.
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, np.ndarray):
        return encode_png(_rgb8(image, label))
    raise ImageError(
        f"{label}: cannot certify a {type(image).__name__}; give a path, encoded bytes, a PIL image "
        "or an HxWx3 array"
    )


def _rgb8(array: np.ndarray, label: str) -> np.ndarray:
    """An HxWx3 uint8 array, or floats in [0, 1] rounded to 8 bits (what the vendor is sent)."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"{label}: an image array must be HxWx3 (RGB), got shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"{label}: an image array must be uint8 or float in [0, 1], got {array.dtype}")
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ImageError(f"{label}: a float image array must hold finite values in [0, 1]")
    return to_uint8(array)
