"""What decides the bytes a denoiser makes of a noisy image: its provenance record.

A sample's bytes follow from its noise and from the denoiser: the weights, and the
arithmetic that applies them (the inference runtime, the device kind, the precision). A job
binds these in its journal, so that every vote it counts comes from one base classifier
h = f(D(.)); the runtime's version is recorded with each run but does not decide.

Weights are named by a sha256 of the files they are read from, never of floats computed
while loading them: batch norm folded on another CPU rounds differently in the last bit,
and two machines that loaded the same files must agree that they did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from apiwrap.denoisers.ffdnet import FFDNET_EXTRA_HINT, FOLDING_VERSION, PACKAGE_WEIGHTS_FILE

__all__ = [
    "DenoiserProvenance",
    "checkpoint_sha256",
    "identity_provenance",
    "pretrained_ffdnet_sha256",
]

ONNXRUNTIME = "onnxruntime"
TORCH = "torch"
#: The identity's runtime: it only clips, which rounds nothing.
NO_RUNTIME = "none"


def _framed_sha256(parts: Iterable[tuple[str, bytes]]) -> str:
    # each part framed by its name and length: no two different sets of files hash alike
    digest = hashlib.sha256()
    for name, data in parts:
        digest.update(f"{name}:{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def checkpoint_sha256(weights: bytes, metadata: bytes) -> str:
    """The weights digest of a checkpoint: its `.pt` and `.json` files as read."""
    return _framed_sha256([("weights.pt", weights), ("metadata.json", metadata)])


def pretrained_ffdnet_sha256(weights: bytes, noise_level: float) -> str:
    """The weights digest of the pretrained FFDNet: the package's weights file as read, the noise
    level its map is set to (exactly, as a hexadecimal float) and the folding code's version."""
    return _framed_sha256(
        [
            (PACKAGE_WEIGHTS_FILE, weights),
            ("noise_level", float(noise_level).hex().encode()),
            ("folding", FOLDING_VERSION.encode()),
        ]
    )


@dataclass(frozen=True, slots=True)
class DenoiserProvenance:
    """The denoiser that made a sample's bytes, and how it computed them.

    ``weights_sha256``, ``runtime``, ``device`` and ``precision`` decide the bytes
    (:meth:`deciding`): a job resumed, or prepared on another worker, must match them.
    ``runtime_version`` is recorded for every run, not matched: a patch release of a runtime
    is not refused for the chance that it rounds alike.
    """

    #: The denoiser's name (a shipped name, or the `name` of a checkpoint's metadata).
    name: str
    #: sha256 of the files the weights were read from; None for the identity (no weights).
    weights_sha256: str | None
    #: "onnxruntime" or "torch"; "none" for the identity.
    runtime: str
    runtime_version: str | None
    #: "cpu" or "cuda".
    device: str
    #: "float32", or "tf32" where CUDA convolutions round their inputs to TensorFloat-32.
    precision: str

    def deciding(self) -> dict[str, str | None]:
        """The fields that decide a sample's bytes, by name."""
        return {
            "weights_sha256": self.weights_sha256,
            "runtime": self.runtime,
            "device": self.device,
            "precision": self.precision,
        }

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)

    def describe(self) -> str:
        """E.g. "onnxruntime on cpu in float32"."""
        return f"{self.runtime} on {self.device} in {self.precision}"

    def differences(self, recorded: Mapping[str, str | None]) -> dict[str, tuple[str | None, str | None]]:
        """Deciding fields whose value in ``recorded`` (another record's :meth:`deciding`) differs
        from this record's, as field -> (recorded, this)."""
        return {
            field: (recorded.get(field), value)
            for field, value in self.deciding().items()
            if recorded.get(field) != value
        }

    def refusal(self, recorded: Mapping[str, str | None]) -> str | None:
        """Why samples made with this denoiser cannot join samples made under ``recorded`` (another
        record's :meth:`deciding`), naming the difference and the fix; None when they can."""
        changed = self.differences(recorded)
        if not changed:
            return None
        if "weights_sha256" in changed:
            return (
                f"this job's samples were denoised with weights of sha256 {recorded.get('weights_sha256')}; "
                f"denoiser {self.name!r} here has other weights (sha256 {self.weights_sha256}): use the "
                "files the job started with, or start a new job"
            )
        then = f"{recorded.get('runtime')} on {recorded.get('device')} in {recorded.get('precision')}"
        parts = {"runtime": self.runtime, "device": f"on {self.device}", "precision": f"in {self.precision}"}
        now = " ".join(part for field, part in parts.items() if field in changed)
        return (
            f"this job's samples were denoised by {then}; this run would use {now}: "
            f"{_fix(recorded, changed)} or start a new job"
        )


def _fix(recorded: Mapping[str, str | None], changed: Mapping[str, object]) -> str:
    """How to make this run compute as the recorded one did (the device decides the runtime)."""
    if "device" in changed:
        if recorded.get("device") == "cpu":
            return "hide the GPU from this run (CUDA_VISIBLE_DEVICES='')"
        return "run it where a CUDA GPU is visible"
    if "runtime" in changed:
        if recorded.get("runtime") == ONNXRUNTIME:
            return f"install onnxruntime ({FFDNET_EXTRA_HINT})"
        return "run it where onnxruntime is not installed (pip uninstall onnxruntime)"
    precision = recorded.get("precision")
    return f"run it where convolutions compute in {precision} (the job's kind of GPU and TF32 setting)"


def identity_provenance(name: str) -> DenoiserProvenance:
    """The identity's record: it only clips, on the CPU that makes the samples, and rounds
    nothing, so it is the same on every machine."""
    return DenoiserProvenance(name, None, NO_RUNTIME, None, "cpu", "float32")
