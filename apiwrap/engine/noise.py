"""Reproducible Gaussian noise: a pure function of (seed, image digest, sigma, sample index).

Each sample index gets its own counter-based Philox stream keyed by a hash of the four
values, so a sample's noise does not depend on batch size, order, or which other samples
were drawn, and a resumed job continues the stream at the next unused index instead of
replaying noise (replayed noise would duplicate votes).

Floating-point Gaussian sampling is not exactly the continuous distribution the
certificate assumes (Voracek & Hein 2023); the deviation is far below the statistical
error at the sample sizes used here, and is documented rather than corrected.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

__all__ = ["NOISE_SCHEME", "noise_batch", "noise_for_sample", "noise_key"]

#: Recorded with every job so that a change of generator can never mix streams.
NOISE_SCHEME = "philox4x64-sha256-v1"


def noise_key(seed: int, image_digest: str, sigma: float, index: int) -> int:
    """The 128-bit Philox key of one sample."""
    material = struct.pack("<q", seed) + image_digest.encode() + struct.pack("<dq", sigma, index)
    return int.from_bytes(hashlib.sha256(material).digest()[:16], "little")


def noise_for_sample(
    seed: int, image_digest: str, sigma: float, index: int, shape: tuple[int, ...]
) -> np.ndarray:
    """sigma * N(0, I) noise of ``shape`` (float32) for one sample index."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    generator = np.random.Generator(np.random.Philox(key=noise_key(seed, image_digest, sigma, index)))
    return (sigma * generator.standard_normal(shape, dtype=np.float32)).astype(np.float32, copy=False)


def noise_batch(
    seed: int, image_digest: str, sigma: float, indices: list[int] | range, shape: tuple[int, ...]
) -> np.ndarray:
    """Noise for several sample indices, stacked; each row equals :func:`noise_for_sample`."""
    return np.stack([noise_for_sample(seed, image_digest, sigma, index, shape) for index in indices])
