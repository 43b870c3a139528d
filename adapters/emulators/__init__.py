"""Wire-protocol emulators of the vendors, backed by a real ImageNet classifier.

Each emulator is a real server on 127.0.0.1 speaking the vendor's protocol, so the
official SDKs run end to end offline::

    from apiwrap.adapters.emulators import EmulatorConfig, emulator

    with emulator("aws", EmulatorConfig(tps=5)) as endpoint:
        adapter = create_adapter("aws", endpoint=endpoint)

Vendor modules are imported on first use: the gRPC emulators need the vendors' SDKs
for their message types.
"""

from __future__ import annotations

import importlib

from apiwrap.adapters.emulators.core import FAULTS, Emulator, EmulatorConfig, Fault

__all__ = ["FAULTS", "VENDORS", "Emulator", "EmulatorConfig", "Fault", "emulator", "start_emulator"]

# vendor -> "module:class"
_EMULATORS: dict[str, str] = {
    "aws": "apiwrap.adapters.emulators.aws:AwsEmulator",
    "google": "apiwrap.adapters.emulators.google:GoogleEmulator",
    "azure": "apiwrap.adapters.emulators.azure:AzureEmulator",
    "clarifai": "apiwrap.adapters.emulators.clarifai:ClarifaiEmulator",
}

#: Vendors that have an emulator.
VENDORS: tuple[str, ...] = tuple(_EMULATORS)


def emulator(vendor: str, config: EmulatorConfig | None = None) -> Emulator:
    """A (not yet started) emulator of ``vendor``; enter it to start it."""
    try:
        target = _EMULATORS[vendor]
    except KeyError:
        raise ValueError(f"no emulator for {vendor!r}; choose one of {', '.join(VENDORS)}") from None
    module_name, class_name = target.split(":")
    emulator_class: type[Emulator] = getattr(importlib.import_module(module_name), class_name)
    return emulator_class(config)


def start_emulator(vendor: str, config: EmulatorConfig | None = None) -> Emulator:
    """Start an emulator of ``vendor``; read ``.endpoint`` and call ``.stop()`` when done."""
    running = emulator(vendor, config)
    running.start()
    return running
