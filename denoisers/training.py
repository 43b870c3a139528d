"""Training denoisers with the seed's objectives: MSE, Stab, and Stab+MSE.

- `mse`: mean squared error between D(x + delta) and x.
- `stab`: cross-entropy of a frozen classifier F on D(x + delta) against argmax F(x), from a
  random initialisation.
- `stab+mse`: an MSE-trained denoiser (`init_from`: a checkpoint, or "ffdnet" for the
  pretrained FFDNet at the run's sigma) fine-tuned with the stab loss, plus `mse_weight` x MSE
  (0 by default, as in the seed); `trainable_last_layers` limits it to the network's last
  layers.

Classifiers: black-box mode cycles through one or several frozen surrogates, one per
batch; white-box mode uses the target classifier itself. Training data are seeded random
crops of an image folder (never the evaluation set). Every `checkpoint_every` steps the
run writes a usable checkpoint and a resumable training state.
"""

from __future__ import annotations

import datetime
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn import functional

from apiwrap.denoisers.architectures import create_architecture
from apiwrap.denoisers.classifiers import load_classifier
from apiwrap.denoisers.data import RandomCropSampler, ensure_not_evaluation_set, load_images
from apiwrap.denoisers.denoiser import Denoiser, load_checkpoint, save_checkpoint
from apiwrap.denoisers.evaluation import evaluate_folder, psnr
from apiwrap.denoisers.ffdnet import load_pretrained_ffdnet

__all__ = [
    "DEFAULT_EVAL_DATA",
    "DEFAULT_TRAINING_DATA",
    "OBJECTIVES",
    "TrainingConfig",
    "build_loss",
    "train_denoiser",
]

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAINING_DATA = _PROJECT_ROOT.parent / "shared" / "data" / "natural"
DEFAULT_EVAL_DATA = DEFAULT_TRAINING_DATA / "CBSD68"
OBJECTIVES = ("mse", "stab", "stab+mse")
_DEFAULT_LEARNING_RATES = {"mse": 1e-3, "stab": 1e-3, "stab+mse": 1e-5}
# fields that must agree between a saved training state and the run resuming it
_RESUME_INVARIANTS = ("objective", "architecture", "architecture_kwargs", "sigma", "batch_size", "crop_size")


@dataclass
class TrainingConfig:
    """Everything that defines a training run; stored in the checkpoint's metadata."""

    output: Path
    sigma: float = 0.25
    objective: str = "mse"
    architecture: str = "fast"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    data: Path = DEFAULT_TRAINING_DATA
    crop_size: int = 128
    min_scale: float = 1.0
    batch_size: int = 16
    steps: int = 2000
    learning_rate: float | None = None
    cosine_schedule: bool = True
    surrogates: tuple[str, ...] = ("efficientnet-lite0",)
    white_box_target: str | None = None
    init_from: str | None = None
    mse_weight: float = 0.0
    confidence_weighting: bool = False
    surrogate_rescale: float = 0.0
    trainable_last_layers: int | None = None
    checkpoint_every: int = 100
    resume: bool = True
    seed: int = 0
    eval_data: Path | None = DEFAULT_EVAL_DATA
    device: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.data = Path(self.data)
        self.eval_data = Path(self.eval_data) if self.eval_data is not None else None
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.objective == "stab+mse" and self.init_from is None:
            raise ValueError("objective stab+mse fine-tunes an MSE denoiser: give init_from (a name or path)")
        if self.objective != "mse" and not (self.surrogates or self.white_box_target):
            raise ValueError(f"objective {self.objective} needs surrogate classifiers or a white-box target")
        if not 0.0 <= self.surrogate_rescale < 1.0:
            raise ValueError(f"surrogate_rescale is a fraction in [0, 1), got {self.surrogate_rescale}")
        if self.trainable_last_layers is not None and self.trainable_last_layers < 1:
            raise ValueError(f"trainable_last_layers must be at least 1, got {self.trainable_last_layers}")
        if not 0.0 < self.sigma <= 1.0:
            raise ValueError(f"sigma is in [0, 1] pixel units, got {self.sigma}")
        ensure_not_evaluation_set(self.data)

    @property
    def mode(self) -> str | None:
        if self.objective == "mse":
            return None
        return "white-box" if self.white_box_target else "black-box"

    @property
    def classifier_names(self) -> tuple[str, ...]:
        if self.objective == "mse":
            return ()
        return (self.white_box_target,) if self.white_box_target else tuple(self.surrogates)

    @property
    def lr(self) -> float:
        return (
            self.learning_rate if self.learning_rate is not None else _DEFAULT_LEARNING_RATES[self.objective]
        )

    @property
    def state_path(self) -> Path:
        return self.output.with_suffix(".train-state.pt")

    def record(self) -> dict[str, Any]:
        """JSON-ready view of the config."""
        record = asdict(self)
        for key in ("output", "data", "eval_data"):
            record[key] = str(record[key]) if record[key] is not None else None
        record["surrogates"] = list(self.surrogates)
        return record


def _initial_network(config: TrainingConfig) -> tuple[nn.Module, dict[str, Any] | None]:
    if config.init_from is None:
        return create_architecture(config.architecture, **config.architecture_kwargs), None
    from apiwrap.denoisers.denoiser import CHECKPOINT_DIR, FFDNET_NAME

    if config.init_from == FFDNET_NAME:
        config.architecture = FFDNET_NAME
        config.architecture_kwargs = {"noise_level": config.sigma}
        parent = {"name": FFDNET_NAME, "objective": "pretrained (IPOL FFDNet colour weights)", "steps": None}
        return load_pretrained_ffdnet(config.sigma).train(), parent

    shipped = CHECKPOINT_DIR / f"{config.init_from}.pt"
    network, parent = load_checkpoint(shipped if shipped.is_file() else config.init_from)
    # the parent's architecture wins: fine-tuning cannot change it
    config.architecture = parent["architecture"]
    config.architecture_kwargs = parent.get("architecture_kwargs", {})
    return network.train(), parent


def _freeze_all_but_last_layers(network: nn.Module, count: int) -> list[nn.Parameter]:
    """Freezes every layer but the last `count` layers that have parameters; returns the rest."""
    layers = [module for module in network.modules() if list(module.parameters(recurse=False))]
    if count > len(layers):
        raise ValueError(f"the network has {len(layers)} layers with parameters, fewer than {count}")
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    trainable = [parameter for layer in layers[-count:] for parameter in layer.parameters(recurse=False)]
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def build_loss(
    config: TrainingConfig, classifiers: list[nn.Module]
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    """The objective as loss(network, clean, noisy, step) -> (loss, denoised output); `step`
    picks the classifier when several surrogates are cycled."""

    def mse_loss(
        network: nn.Module, clean: torch.Tensor, noisy: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = network(noisy)
        return functional.mse_loss(denoised, clean), denoised

    def stability_loss(
        network: nn.Module, clean: torch.Tensor, noisy: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        classifier = classifiers[step % len(classifiers)]
        with torch.no_grad():
            confidence, clean_labels = classifier(clean).softmax(1).max(1)
        denoised = network(noisy)
        # the classifier sees what inference gives it: the clipped image
        seen = denoised.clamp(0.0, 1.0)
        if config.surrogate_rescale:
            # a different scale each step stands for a family of surrogates: features that
            # fool the surrogate at one resolution only are what fails to transfer to the target
            scale = random.Random(config.seed * 1_000_003 + step).uniform(
                1.0 - config.surrogate_rescale, 1.0 + config.surrogate_rescale
            )
            seen = functional.interpolate(seen, scale_factor=scale, mode="bilinear", align_corners=False)
        per_image = functional.cross_entropy(classifier(seen), clean_labels, reduction="none")
        if config.confidence_weighting:
            # crops of natural photos are often no ImageNet object at all; weighting by the clean
            # confidence lets the crops that show one drive the denoiser
            loss = (per_image * confidence).sum() / confidence.sum()
        else:
            loss = per_image.mean()
        if config.mse_weight:
            loss = loss + config.mse_weight * functional.mse_loss(denoised, clean)
        return loss, denoised

    return mse_loss if config.objective == "mse" else stability_loss


def _metadata(
    config: TrainingConfig, step: int, seconds: float, parent: dict[str, Any] | None, image_count: int
) -> dict[str, Any]:
    return {
        "name": config.name or config.output.stem,
        "architecture": config.architecture,
        "architecture_kwargs": config.architecture_kwargs,
        "sigma": config.sigma,
        "objective": config.objective,
        "mode": config.mode,
        "surrogates": list(config.classifier_names),
        "training_data": {"folder": str(config.data), "images": image_count},
        "steps": step,
        "schedule_steps": config.steps,
        "batch_size": config.batch_size,
        "crop_size": config.crop_size,
        "min_scale": config.min_scale,
        "learning_rate": config.lr,
        "cosine_schedule": config.cosine_schedule,
        "mse_weight": config.mse_weight if config.objective != "mse" else None,
        "confidence_weighting": config.confidence_weighting if config.objective != "mse" else None,
        "surrogate_rescale": config.surrogate_rescale if config.objective != "mse" else None,
        "trainable_last_layers": config.trainable_last_layers,
        "init_from": (
            {"name": parent.get("name"), "objective": parent.get("objective"), "steps": parent.get("steps")}
            if parent
            else None
        ),
        "seed": config.seed,
        "train_seconds": round(seconds, 1),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }


def train_denoiser(config: TrainingConfig, *, show_progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) a training run and returns the final checkpoint's metadata."""
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    images = load_images(config.data)
    sampler = RandomCropSampler(images, config.crop_size, min_scale=config.min_scale, seed=config.seed)
    noise_generator = torch.Generator().manual_seed(config.seed + 1)

    network, parent = _initial_network(config)
    network = network.to(device, memory_format=torch.channels_last).train()
    classifiers = [load_classifier(name).to(device) for name in config.classifier_names]
    loss_function = build_loss(config, classifiers)
    trainable = (
        _freeze_all_but_last_layers(network, config.trainable_last_layers)
        if config.trainable_last_layers
        else list(network.parameters())
    )
    optimizer = torch.optim.Adam(trainable, lr=config.lr)

    def learning_rate_factor(step: int) -> float:
        # cosine decay to 1% of the initial rate: short CPU runs end on small, precise steps
        if not config.cosine_schedule:
            return 1.0
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(step / config.steps, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)

    start_step, elapsed = 0, 0.0
    if config.resume and config.state_path.is_file():
        state = torch.load(config.state_path, map_location="cpu", weights_only=False)
        mismatched = [key for key in _RESUME_INVARIANTS if state["config"][key] != config.record()[key]]
        if mismatched:
            raise ValueError(f"cannot resume from {config.state_path}: {', '.join(mismatched)} differ")
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        noise_generator.set_state(state["noise_generator"])
        start_step, elapsed = state["step"], state["elapsed"]

    def save(step: int) -> dict[str, Any]:
        metadata = _metadata(config, step, elapsed, parent, len(images))
        save_checkpoint(network, config.output, metadata)
        torch.save(
            {
                "config": config.record(),
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(),
                "noise_generator": noise_generator.get_state(),
                "step": step,
                "elapsed": elapsed,
            },
            config.state_path,
        )
        return metadata

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}  PSNR {task.fields[psnr]:.2f} dB"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    running_loss = running_psnr = float("nan")
    metadata = _metadata(config, start_step, elapsed, parent, len(images))
    with progress:
        task = progress.add_task(
            f"{config.objective} sigma={config.sigma:g}",
            total=config.steps,
            completed=start_step,
            loss=running_loss,
            psnr=running_psnr,
        )
        for step in range(start_step, config.steps):
            tick = time.perf_counter()
            clean = sampler.sample(config.batch_size)
            noisy = clean + config.sigma * torch.randn(clean.shape, generator=noise_generator)
            clean = clean.to(device, memory_format=torch.channels_last)
            noisy = noisy.to(device, memory_format=torch.channels_last)
            loss, denoised = loss_function(network, clean, noisy, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            batch_psnr = float(psnr(denoised.detach().clamp(0.0, 1.0), clean).mean())
            # exponential moving averages: a single batch's loss is too noisy to read
            running_loss = loss.item() if step == start_step else 0.95 * running_loss + 0.05 * loss.item()
            running_psnr = batch_psnr if step == start_step else 0.95 * running_psnr + 0.05 * batch_psnr
            elapsed += time.perf_counter() - tick
            progress.update(task, advance=1, loss=running_loss, psnr=running_psnr)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                metadata = save(step + 1)
                if show_progress and not progress.console.is_terminal:
                    # a log file gets no live bar: leave one line per checkpoint instead
                    progress.console.print(
                        f"step {step + 1}/{config.steps} loss {running_loss:.4f} PSNR {running_psnr:.2f} dB "
                        f"{elapsed:.0f} s"
                    )

    if config.eval_data is not None:
        scores = evaluate_folder(
            Denoiser(network, name=metadata["name"], sigma=config.sigma, device=device),
            config.eval_data,
            config.sigma,
        )
        metadata.update(
            eval_data=str(config.eval_data),
            eval_noise_seed=0,
            psnr_eval=round(scores.psnr, 3),
            ssim_eval=round(scores.ssim, 4),
            noisy_psnr_eval=round(scores.noisy_psnr, 3),
        )
        save_checkpoint(network, config.output, metadata)
    return metadata
