"""Denoiser network architectures and a registry that builds them by name.

All networks map a noisy image batch (B, 3, H, W), roughly in [0, 1] and not clipped, to a
denoised batch of the same shape. Clipping to [0, 1] is the caller's job (`Denoiser`), so
training sees the unclipped output and gets gradients everywhere.

- `dncnn` / `dncnn-wide`: the seed's DnCNN (Zhang et al. 2017), 17 layers, 64 / 128 channels,
  batch norm, residual output x - net(x).
- `memnet`: MemNet (Tai et al. 2017), persistent memory blocks of recursive residual units
  with 1x1 gate convolutions and multi-supervised reconstruction; small default config.
- `ffdnet`: FFDNet's colour network (`apiwrap.denoisers.ffdnet`), batch norm folded; its
  pretrained weights come from the optional GPL-3.0 package `ffdnet`.
- `fast`: a CPU-efficient design. A pixel unshuffle by 2 (as in FFDNet) folds each 2x2
  patch into channels, so the convolutional body runs on a quarter of the pixels; a
  second, stride-2 stage at a quarter resolution widens the receptive field cheaply; the
  output is again a predicted noise residual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from apiwrap.denoisers.ffdnet import FFDNet
from apiwrap.errors import ConfigurationError

__all__ = ["ARCHITECTURES", "DnCNN", "FastDenoiser", "MemNet", "create_architecture"]


class DnCNN(nn.Module):
    """DnCNN: conv+ReLU, (depth - 2) x conv+BN+ReLU, conv; predicts the noise and subtracts it."""

    def __init__(self, depth: int = 17, channels: int = 64, image_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(image_channels, channels, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels, eps=1e-4, momentum=0.95),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels, image_channels, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.orthogonal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy - self.body(noisy)


class _BNReLUConv(nn.Sequential):
    """MemNet's pre-activation unit: BN, ReLU, conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        )


class _ResidualUnit(nn.Module):
    """Two pre-activation convolutions with an identity skip (one recursion of MemNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = _BNReLUConv(channels, channels)
        self.second = _BNReLUConv(channels, channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.second(self.first(features))


class _MemoryBlock(nn.Module):
    """A recursive unit of residual blocks plus a 1x1 gate over short- and long-term memory."""

    def __init__(self, channels: int, num_resblocks: int, num_previous_memories: int) -> None:
        super().__init__()
        self.recursive_unit = nn.ModuleList(_ResidualUnit(channels) for _ in range(num_resblocks))
        self.gate_unit = _BNReLUConv((num_resblocks + num_previous_memories) * channels, channels, 1)

    def forward(self, features: torch.Tensor, long_term_memory: list[torch.Tensor]) -> torch.Tensor:
        short_term_memory = []
        for unit in self.recursive_unit:
            features = unit(features)
            short_term_memory.append(features)
        gated = self.gate_unit(torch.cat(short_term_memory + long_term_memory, dim=1))
        long_term_memory.append(gated)
        return gated


class MemNet(nn.Module):
    """MemNet with multi-supervision: each memory block's output is reconstructed to an image
    and the reconstructions are averaged with learned weights; the network adds the input
    back (it predicts the clean image's residual from the noisy one)."""

    def __init__(
        self, channels: int = 48, num_memblocks: int = 4, num_resblocks: int = 3, image_channels: int = 3
    ) -> None:
        super().__init__()
        self.feature_extractor = _BNReLUConv(image_channels, channels)
        self.memory_blocks = nn.ModuleList(
            _MemoryBlock(channels, num_resblocks, index + 1) for index in range(num_memblocks)
        )
        self.reconstructor = _BNReLUConv(channels, image_channels)
        self.block_weights = nn.Parameter(torch.full((num_memblocks,), 1.0 / num_memblocks))

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        features = self.feature_extractor(noisy)
        long_term_memory = [features]
        weighted_sum = torch.zeros_like(noisy)
        for weight, block in zip(self.block_weights, self.memory_blocks, strict=True):
            features = block(features, long_term_memory)
            weighted_sum = weighted_sum + weight * (self.reconstructor(features) + noisy)
        return weighted_sum / self.block_weights.sum()


def _conv_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.ReLU(inplace=True))


class FastDenoiser(nn.Module):
    """CPU-efficient residual denoiser: pixel unshuffle by 2, a two-scale convolutional body
    (half and quarter resolution, a small U-Net), pixel shuffle back, output x - noise.

    No batch norm, so inference is one conv stack with nothing to fold; the input is centred
    on 0.5 so the first layer's bias need not learn the image mean.
    """

    def __init__(
        self,
        channels: int = 48,
        half_res_layers: int = 3,
        quarter_res_layers: int = 4,
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        packed = image_channels * 4
        self.head = nn.Sequential(
            _conv_relu(packed, channels),
            *(_conv_relu(channels, channels) for _ in range(half_res_layers - 1)),
        )
        self.down = _conv_relu(channels, 2 * channels, stride=2)
        self.bottom = nn.Sequential(
            *(_conv_relu(2 * channels, 2 * channels) for _ in range(quarter_res_layers))
        )
        self.up = nn.Sequential(nn.Conv2d(2 * channels, 4 * channels, 1), nn.PixelShuffle(2))
        self.tail = nn.Sequential(
            *(_conv_relu(channels, channels) for _ in range(half_res_layers - 1)),
            nn.Conv2d(channels, packed, 3, padding=1),
        )

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        height, width = noisy.shape[-2:]
        # odd sizes: pad to a multiple of 4 (two halvings) by reflection, crop at the end
        pad_h, pad_w = (-height) % 4, (-width) % 4
        centred = noisy - 0.5
        if pad_h or pad_w:
            centred = functional.pad(centred, (0, pad_w, 0, pad_h), mode="reflect")
        half = self.head(functional.pixel_unshuffle(centred, 2))
        half = half + self.up(self.bottom(self.down(half)))
        noise = functional.pixel_shuffle(self.tail(half), 2)[..., :height, :width]
        return noisy - noise


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "fast": FastDenoiser,
    "dncnn": DnCNN,
    "dncnn-wide": lambda **kwargs: DnCNN(**{"channels": 128, **kwargs}),
    "memnet": MemNet,
    "ffdnet": FFDNet,
}


def create_architecture(name: str, **kwargs: Any) -> nn.Module:
    """Builds an untrained network by registry name; kwargs override the architecture's defaults."""
    if name not in ARCHITECTURES:
        raise ConfigurationError(
            f"unknown denoiser architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name](**kwargs)
