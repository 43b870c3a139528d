"""Offline testing kit for apiwrap users: a scripted fake adapter and vendor emulators.

Importing this module needs no pytest. Its pytest fixtures live in
:mod:`apiwrap.testing.plugin`, which pytest loads by itself once apiwrap is installed (a
``pytest11`` entry point, as moto and pytest-httpx do):

- ``vendor_emulator(vendor, **config)`` starts an emulator of ``aws``, ``google``, ``azure``
  or ``clarifai`` (stopped after the test) and returns it; ``.endpoint`` goes to
  ``create_adapter(vendor, endpoint=...)``, ``.calls``/``.billable`` count what it saw.
  It is backed by :func:`fake_classify` unless ``real_model=True``.
- ``scripted_adapter(*steps, ...)`` returns a :class:`ScriptedAdapter` whose calls follow
  ``steps``: a label, a :class:`VendorAnswer`, a :class:`VendorError` to raise, or a list
  of those (one per image).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from apiwrap.adapters.base import Adapter, ImageLimits, Label, VendorAnswer, canonical_label
from apiwrap.adapters.emulators.fakes import fake_classify, solid_png
from apiwrap.adapters.errors import VendorError

__all__ = [
    "ScriptedAdapter",
    "Step",
    "fake_classify",
    "solid_png",
]

#: One call's scripted fate: a label, an answer, an error to raise, or one of those per image.
Step = str | VendorAnswer | VendorError | Sequence[str | VendorAnswer | VendorError]


class ScriptedAdapter(Adapter):
    """An :class:`~adapters.base.Adapter` whose calls follow a script, for engine tests.

    Each ``label_batch`` call takes the next step: a label (every image answered with it,
    score 1), a :class:`VendorAnswer`, a :class:`VendorError` (raised: the whole request
    failed), or a sequence with one of those per image (errors land in their slots).
    Once the script is spent, every call answers ``then``. ``calls`` records the image
    batches received.
    """

    def __init__(
        self,
        steps: Iterable[Step],
        *,
        then: str = "cat",
        name: str = "scripted",
        max_batch: int = 1,
        limits: ImageLimits | None = None,
        model_version: str | None = "scripted-1",
    ) -> None:
        self._steps: Iterator[Step] = iter(steps)
        self.then = then
        self.name = name
        self.max_batch = max_batch
        self.limits = limits or ImageLimits(max_bytes=20 * 1024 * 1024)
        self.model_version = model_version
        self.calls: list[list[bytes]] = []
        self.closed = False

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        self.calls.append(list(images))
        step = next(self._steps, self.then)
        if isinstance(step, VendorError):
            raise step
        if isinstance(step, str | VendorAnswer):
            return [self._answer(step) for _ in images]
        if len(step) != len(images):
            raise AssertionError(f"scripted step has {len(step)} entries for {len(images)} images")
        return [item if isinstance(item, VendorError) else self._answer(item) for item in step]

    def _answer(self, step: str | VendorAnswer) -> VendorAnswer:
        if isinstance(step, VendorAnswer):
            return step
        raw = json.dumps({"label": step})
        return VendorAnswer((Label(canonical_label(step), 1.0),), self.model_version, raw)

    async def aclose(self) -> None:
        self.closed = True
