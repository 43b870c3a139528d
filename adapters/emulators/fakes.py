"""Cheap, deterministic stand-ins for tests: a colour "classifier" and solid PNG images.

:func:`fake_classify` replaces the real model behind an emulator
(``EmulatorConfig(classify=fake_classify)``) where a test needs answers that depend on the
image but not the cost of a network pass.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from apiwrap.imaging import decode_rgb8

__all__ = ["fake_classify", "solid_png"]

# ImageNet classes a colour stands for, in channel order R, G, B.
_COLOUR_LABELS = ("goldfish", "tree frog", "jellyfish")


def solid_png(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (96, 96)) -> bytes:
    """A PNG of one colour: a small valid image for every vendor's limits."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def fake_classify(images: Sequence[bytes]) -> list[list[tuple[str, float]]]:
    """A cheap stand-in for the classifier: the label follows the image's dominant colour.

    Red-ish images are "goldfish", green-ish "tree frog", blue-ish "jellyfish", with
    softmax scores of the mean channel values (so noise moves them as it would a model's).
    Raises on bytes that are not an image, as the real model does.
    """
    answers = []
    for data in images:
        thumbnail = np.asarray(decode_rgb8(data).resize((8, 8)), dtype=np.float64)
        red, green, blue = (thumbnail.mean(axis=(0, 1)) / 255.0).tolist()
        weights = [math.exp(8.0 * value) for value in (red, green, blue)]
        total = sum(weights)
        scored = sorted(
            ((name, round(w / total, 6)) for name, w in zip(_COLOUR_LABELS, weights, strict=True)),
            key=lambda item: -item[1],
        )
        answers.append(scored)
    return answers
