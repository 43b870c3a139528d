"""The image model behind the emulated vendors (and the in-process ``local`` vendor).

One mapping from image bytes to ``(ImageNet class name, softmax score)`` pairs, shared by
every emulator so that, with the same backing model, every vendor votes alike. Scores are
rounded to 6 decimals: the vendors carry them as float32 (Google, Clarifai) or scaled by
100 (AWS), and rounding first makes those conversions keep both the order and the ties,
so the top-1 label survives every wire format unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from apiwrap.denoisers.classifiers import imagenet_class_names, load_classifier
from apiwrap.imaging import decode_rgb8

__all__ = ["Classify", "ImageModel", "decode_rgb"]

#: What an emulator needs from a model: image bytes in, top-k ``(name, score)`` per image.
Classify = Callable[[Sequence[bytes]], list[list[tuple[str, float]]]]

_SCORE_DECIMALS = 6


def decode_rgb(data: bytes) -> torch.Tensor:
    """Decode PNG/JPEG/... bytes to a float (3, H, W) tensor in [0, 1] at the image's own size."""
    array = np.asarray(decode_rgb8(data), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


class ImageModel:
    """A frozen ImageNet classifier answering top-k class names with softmax scores.

    Thread-safe: inference runs one image at a time under a lock. Images are never
    batched together because a batched forward pass differs from a single one in the last
    float bits, which could flip a near-tie and make vendors with different batch sizes
    disagree; on CPU the throughput is the same either way.
    """

    def __init__(self, classifier_name: str = "efficientnet-lite2", top_k: int = 10) -> None:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self.classifier_name = classifier_name
        self.top_k = top_k
        self._classifier = load_classifier(classifier_name)
        self._names = imagenet_class_names()
        self._lock = threading.Lock()

    def classify(self, images: Sequence[bytes]) -> list[list[tuple[str, float]]]:
        """Top-k ``(class name, score)`` per image, best first; raises on undecodable bytes."""
        tensors = [decode_rgb(data) for data in images]  # decode outside the lock
        return [self._top_k(tensor) for tensor in tensors]

    __call__ = classify

    def _top_k(self, image: torch.Tensor) -> list[tuple[str, float]]:
        with self._lock, torch.inference_mode():
            probabilities = torch.softmax(self._classifier(image.unsqueeze(0))[0].double(), dim=0)
        # A few ImageNet names repeat (two "missile" classes): keep each name's best score,
        # as a vendor would answer one label once.
        best: dict[str, float] = {}
        values, indices = torch.sort(probabilities, descending=True)
        for value, index in zip(values.tolist(), indices.tolist(), strict=True):
            name = self._names[index]
            if name not in best:
                best[name] = round(value, _SCORE_DECIMALS)
                if len(best) == self.top_k:
                    break
        return list(best.items())
