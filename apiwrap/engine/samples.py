"""Noisy samples ready to send: noise -> denoiser -> 8-bit quantisation -> PNG bytes.

Everything here happens after the noise is drawn and is deterministic, so it is part of
the base classifier h and the certificate still holds. The work runs on one worker
thread (torch releases the GIL), batched across every image in flight, so a forward pass
never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from apiwrap.engine.images import SourceImage, encode_png, to_uint8
from apiwrap.engine.noise import noise_for_sample
from apiwrap.statistics.votes import CLEAN_SAMPLE

__all__ = ["PreparedSample", "SamplePreparer", "prepare_samples"]

Denoise = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class PreparedSample:
    data: bytes
    digest: str


@dataclass(slots=True)
class _Request:
    image: SourceImage
    index: int
    future: asyncio.Future[PreparedSample]


class SamplePreparer:
    """Turns (image, sample index) into the exact bytes to send, in batches on a worker thread."""

    def __init__(self, denoise: Denoise | None, *, seed: int, sigma: float, batch_size: int = 16) -> None:
        self._denoise = denoise
        self._seed = seed
        self._sigma = sigma
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apiwrap-denoise")
        self._worker: asyncio.Task[None] | None = None
        self.prepared = 0

    async def prepare(self, image: SourceImage, index: int) -> PreparedSample:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="apiwrap-sample-batcher")
        future: asyncio.Future[PreparedSample] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(image, index, future))
        return await future

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            # Let the other images' requests of this scheduling round join the batch.
            await asyncio.sleep(0)
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [request for request in batch if not request.future.cancelled()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._prepare_batch, live)
            except Exception as exc:  # a denoiser failure fails these samples, not the batcher
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            for request, result in zip(live, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)

    def _prepare_batch(self, requests: list[_Request]) -> list[PreparedSample]:
        samples = prepare_samples(
            self._denoise, self._seed, self._sigma, [(request.image, request.index) for request in requests]
        )
        self.prepared += len(samples)
        return samples


def prepare_samples(
    denoise: Denoise | None, seed: int, sigma: float, requests: Sequence[tuple[SourceImage, int]]
) -> list[PreparedSample]:
    """The exact bytes of each (image, sample index): one batched denoiser pass per image shape.

    A pure function of its arguments, so a worker process (``apiwrap.engine.distributed``)
    produces the same bytes as this process for the same seed on the same kind of device.
    """
    pixels: list[np.ndarray | None] = [None] * len(requests)
    by_shape: dict[tuple[int, int, int], list[int]] = {}
    for position, (image, index) in enumerate(requests):
        if index == CLEAN_SAMPLE:
            pixels[position] = image.pixels
        else:
            by_shape.setdefault(image.shape, []).append(position)
    for shape, positions in by_shape.items():
        noisy = np.stack(
            [
                requests[p][0].pixels
                + noise_for_sample(seed, requests[p][0].digest, sigma, requests[p][1], shape)
                for p in positions
            ]
        )
        if denoise is not None:
            tensor = torch.from_numpy(noisy).permute(0, 3, 1, 2).contiguous()
            noisy = denoise(tensor).permute(0, 2, 3, 1).cpu().numpy()
        for p, sample in zip(positions, noisy, strict=True):
            pixels[p] = sample
    samples = []
    for sample_pixels in pixels:
        assert sample_pixels is not None
        data = encode_png(to_uint8(sample_pixels))
        samples.append(PreparedSample(data, hashlib.sha256(data).hexdigest()))
    return samples
