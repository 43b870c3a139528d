"""pytest fixtures of the apiwrap test kit, registered as the ``apiwrap`` pytest plugin.

Installed with apiwrap, so a user's tests can ask for ``vendor_emulator`` or
``scripted_adapter`` with no ``conftest.py`` line (``-p no:apiwrap`` turns it off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apiwrap.adapters.emulators import Emulator, EmulatorConfig, emulator
from apiwrap.testing import ScriptedAdapter, Step, fake_classify

__all__ = ["scripted_adapter", "vendor_emulator"]


@pytest.fixture
def vendor_emulator() -> Iterator[Callable[..., Emulator]]:
    """Factory: ``vendor_emulator("aws", tps=5, api_key="k")`` -> a running emulator.

    Keyword arguments are :class:`EmulatorConfig` fields; ``real_model=True`` backs it with
    the configured classifier instead of :func:`fake_classify`. Stopped after the test.
    """
    started: list[Emulator] = []

    def start(vendor: str, *, real_model: bool = False, **config: Any) -> Emulator:
        if not real_model:
            config.setdefault("classify", fake_classify)
        running = emulator(vendor, EmulatorConfig(**config))
        running.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def scripted_adapter() -> Callable[..., ScriptedAdapter]:
    """Factory: ``scripted_adapter("cat", Throttled("slow", 0.1), "dog", then="cat")``."""

    def build(*steps: Step, **options: Any) -> ScriptedAdapter:
        return ScriptedAdapter(steps, **options)

    return build
