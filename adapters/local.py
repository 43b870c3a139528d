"""The embedded default vendor: an in-process black box backed by a pretrained classifier.

It answers like a vendor (canonical ImageNet class names with softmax scores, a model
version) but costs nothing and needs no network or credentials, so the demo and offline
tests run anywhere. Inference runs on a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from apiwrap.adapters._preflight import check_image
from apiwrap.adapters.base import Adapter, ImageLimits, Label, VendorAnswer, canonical_label
from apiwrap.adapters.emulators.model import ImageModel
from apiwrap.adapters.errors import Rejected, VendorError

__all__ = ["LocalAdapter", "create"]


class LocalAdapter(Adapter):
    """Labels images with an ImageNet classifier in this process."""

    name = "local"
    max_batch = 1
    limits = ImageLimits(max_bytes=20_000_000, min_side=16, max_side=4096, formats=frozenset({"PNG", "JPEG"}))

    def __init__(self, model: ImageModel) -> None:
        self._model = model
        self.model_version = f"{model.classifier_name}-top{model.top_k}"
        self.model_options = {"model": model.classifier_name, "top_k": model.top_k}

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        return list(await asyncio.gather(*(asyncio.to_thread(self._label, image) for image in images)))

    def _label(self, image: bytes) -> VendorAnswer | VendorError:
        try:
            # Like a remote vendor, refuse what breaks the declared limits before any work.
            check_image(image, self.limits)
        except Rejected as exc:
            return exc
        try:
            (top,) = self._model.classify([image])
        except OSError as exc:  # PIL's error for bytes it cannot decode
            return Rejected(f"local vendor cannot decode the image: {exc}")
        labels = tuple(Label(canonical_label(name), score) for name, score in top)
        raw = json.dumps({"labels": [{"name": n, "score": s} for n, s in top], "model": self.model_version})
        return VendorAnswer(labels, self.model_version, raw)


def create(
    *,
    endpoint: str | None = None,
    model: str = "efficientnet-lite2",
    top_k: int = 10,
    timeout: float | None = None,
) -> LocalAdapter:
    """The local vendor; ``endpoint`` is refused since nothing is sent anywhere.

    ``timeout`` is taken as every vendor's factory takes it; with no client to give it to, the
    scheduler's deadline alone bounds a local call.
    """
    if endpoint is not None:
        raise ValueError("the local vendor runs in this process and takes no --endpoint")
    return LocalAdapter(ImageModel(model, top_k=top_k))
