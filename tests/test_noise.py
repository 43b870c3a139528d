"""Noise is a pure function of (seed, image digest, sigma, index), whatever the batching."""

from __future__ import annotations

import asyncio

import numpy as np

from apiwrap.engine.images import SourceImage
from apiwrap.engine.noise import noise_batch, noise_for_sample
from apiwrap.engine.samples import SamplePreparer

SHAPE = (24, 32, 3)


def test_same_sample_same_noise_for_batch_sizes_1_7_64() -> None:
    indices = list(range(64))
    whole = noise_batch(7, "digest", 0.25, indices, SHAPE)
    for batch_size in (1, 7, 64):
        chunks = [
            noise_batch(7, "digest", 0.25, indices[i : i + batch_size], SHAPE)
            for i in range(0, 64, batch_size)
        ]
        assert np.array_equal(np.concatenate(chunks), whole)


def test_order_of_drawing_does_not_matter() -> None:
    forward = noise_batch(1, "d", 0.12, [3, 9, 4], SHAPE)
    backward = noise_batch(1, "d", 0.12, [4, 9, 3], SHAPE)
    assert np.array_equal(forward[0], backward[2])


def test_each_input_of_the_key_changes_the_noise() -> None:
    base = noise_for_sample(1, "d", 0.25, 5, SHAPE)
    for other in (
        noise_for_sample(2, "d", 0.25, 5, SHAPE),
        noise_for_sample(1, "e", 0.25, 5, SHAPE),
        noise_for_sample(1, "d", 0.25, 6, SHAPE),
    ):
        assert not np.allclose(base, other)
    # sigma is in the key, so a different sigma is not merely a rescaled copy
    assert not np.allclose(base / 0.25, noise_for_sample(1, "d", 0.5, 5, SHAPE) / 0.5)


def test_noise_has_the_requested_scale() -> None:
    noise = noise_batch(0, "d", 0.25, range(50), (64, 64, 3))
    assert abs(float(noise.std()) - 0.25) < 0.002
    assert abs(float(noise.mean())) < 0.002


def test_prepared_bytes_do_not_depend_on_the_batch_size() -> None:
    rng = np.random.default_rng(0)
    image = SourceImage("x", rng.random(SHAPE, dtype=np.float32), "digest-x")

    async def prepare_all(batch_size: int) -> list[bytes]:
        preparer = SamplePreparer(None, seed=3, sigma=0.25, batch_size=batch_size)
        try:
            samples = await asyncio.gather(*(preparer.prepare(image, i) for i in range(20)))
        finally:
            await preparer.aclose()
        return [s.data for s in samples]

    reference = asyncio.run(prepare_all(1))
    assert asyncio.run(prepare_all(7)) == reference
    assert asyncio.run(prepare_all(64)) == reference
    assert len(set(reference)) == 20
