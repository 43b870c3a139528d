"""Stab+MSE fine-tune of the pretrained FFDNet through frozen surrogates, early-stopped on the
vendor's agreement on held-out natural-image crops.

Training: black-box Stab+MSE (`apiwrap.denoisers.training`) from the IPOL FFDNet weights,
surrogates efficientnet-lite0 and lite1 (never lite2's gradients), on the natural-image
folders (CBSD68 + Kodak24) less a validation quarter; imagenet-api-dev is never read.
Validation: every 4th image of each folder (sorted), fixed random-resized square crops at
224x224, fixed noises; the score is how often lite2 (used as a black box, like the vendor)
keeps its clean top-1 label on the denoised, clipped, 8-bit copies. Every `--every` steps the
checkpoint is scored against FFDNet unchanged on the same crops and noises; the run stops
after `--patience` scores in a row below the best so far.

    python -m bench.ffdnet_finetune --out runs/ffdnet-ft [--steps 300 --every 50 --lr 1e-5 --last-layers 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional

from apiwrap.denoisers import Denoiser, load_denoiser, save_checkpoint
from apiwrap.denoisers.classifiers import load_classifier
from apiwrap.denoisers.data import list_images, load_image
from apiwrap.denoisers.training import DEFAULT_TRAINING_DATA, TrainingConfig, train_denoiser

SIGMA = 0.25
CROP = 224
VALIDATION_EVERY = 4  # every 4th image of each folder is held out


def split_folders(data: Path, workdir: Path) -> tuple[Path, Path]:
    """Symlink folders `train/` and `validation/` under `workdir` (every 4th image validates)."""
    train, validation = workdir / "train", workdir / "validation"
    for folder in (train, validation):
        folder.mkdir(parents=True, exist_ok=True)
    for subfolder in sorted(path for path in data.iterdir() if path.is_dir()):
        for index, image in enumerate(list_images(subfolder)):
            target = validation if index % VALIDATION_EVERY == 0 else train
            link = target / f"{subfolder.name}-{image.name}"
            if not link.exists():
                link.symlink_to(image.resolve())
    return train, validation


def validation_crops(folder: Path, crops_per_image: int, seed: int) -> torch.Tensor:
    """Fixed random-resized square crops (a side of 50-100% of the shorter side) at CROP x CROP."""
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for path in list_images(folder):
        image = load_image(path)
        height, width = image.shape[-2:]
        for _ in range(crops_per_image):
            side = round((0.5 + 0.5 * float(torch.rand((), generator=generator))) * min(height, width))
            top = int(torch.randint(height - side + 1, (1,), generator=generator))
            left = int(torch.randint(width - side + 1, (1,), generator=generator))
            square = image[None, :, top : top + side, left : left + side]
            resized = functional.interpolate(square, size=(CROP, CROP), mode="bilinear", antialias=True)
            crops.append(resized[0])
    return torch.stack(crops).clamp(0.0, 1.0)


class Validation:
    """lite2 agreement with its clean label on fixed noisy copies of fixed crops."""

    def __init__(self, crops: torch.Tensor, noises_per_crop: int, seed: int) -> None:
        self.classifier = load_classifier("efficientnet-lite2")
        self.crops = crops
        generator = torch.Generator().manual_seed(seed)
        self.noise = torch.randn((len(crops), noises_per_crop, *crops.shape[1:]), generator=generator)
        with torch.inference_mode():
            self.clean_labels = torch.cat([self.classifier(chunk).argmax(1) for chunk in crops.split(16)])

    def score(self, denoiser: Denoiser) -> list[float]:
        """Per-crop agreement (the share of its noisy copies that keep the clean label)."""
        shares = []
        with torch.inference_mode():
            for crop, noise, label in zip(self.crops, self.noise, self.clean_labels, strict=True):
                # what the vendor sees: denoised, clipped, quantised to 8 bits
                seen = (denoiser(crop[None] + SIGMA * noise) * 255).round() / 255
                shares.append(float((self.classifier(seen).argmax(1) == label).float().mean()))
        return shares


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ffdnet-ft"))
    parser.add_argument("--data", type=Path, default=DEFAULT_TRAINING_DATA)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--last-layers", type=int, default=3, help="train only these last conv layers")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--min-scale", type=float, default=0.35)
    parser.add_argument("--mse-weight", type=float, default=200.0)
    parser.add_argument("--crops-per-image", type=int, default=2)
    parser.add_argument("--noises", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    train, validation_folder = split_folders(args.data, args.out / "data")
    validation = Validation(
        validation_crops(validation_folder, args.crops_per_image, args.seed), args.noises, args.seed + 1
    )
    log = args.out / "validation.jsonl"
    tick = time.perf_counter()
    baseline = validation.score(load_denoiser("ffdnet", SIGMA, device="cpu"))
    scores = {0: baseline}
    seconds = time.perf_counter() - tick
    print(f"ffdnet unchanged: agreement {sum(baseline) / len(baseline):.4f} ({seconds:.0f} s)", flush=True)
    best_step, below = 0, 0
    for step in range(args.every, args.steps + 1, args.every):
        config = TrainingConfig(
            output=args.out / "ffdnet-stab-s025",
            sigma=SIGMA,
            objective="stab+mse",
            init_from="ffdnet",
            data=train,
            crop_size=args.crop_size,
            min_scale=args.min_scale,
            batch_size=args.batch_size,
            steps=step,
            learning_rate=args.lr,
            # constant rate: each stage resumes the previous one, early stopping decides the end
            cosine_schedule=False,
            surrogates=("efficientnet-lite0", "efficientnet-lite1"),
            mse_weight=args.mse_weight,
            confidence_weighting=True,
            surrogate_rescale=0.15,
            trainable_last_layers=args.last_layers,
            checkpoint_every=args.every,
            seed=args.seed,
            eval_data=None,
            device="cpu",
        )
        tick = time.perf_counter()
        train_denoiser(config, show_progress=False)
        trained = time.perf_counter() - tick
        checkpoint = args.out / f"ffdnet-stab-s025-step{step}"
        candidate = load_denoiser(str(config.output), SIGMA, device="cpu")
        scores[step] = validation.score(candidate)
        mean = sum(scores[step]) / len(scores[step])
        wins = sum(a > b for a, b in zip(scores[step], baseline, strict=True))
        losses = sum(a < b for a, b in zip(scores[step], baseline, strict=True))
        record = {
            "step": step,
            "agreement": mean,
            "baseline": sum(baseline) / len(baseline),
            "crops_better": wins,
            "crops_worse": losses,
            "train_seconds": round(trained, 1),
        }
        print(json.dumps(record), flush=True)
        save_checkpoint(candidate.network, checkpoint, {**candidate.metadata, "validation_lite2": record})
        with log.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        best_mean = sum(scores[best_step]) / len(scores[best_step])
        if mean > best_mean:
            best_step, below = step, 0
        else:
            below += 1
            if below >= args.patience:
                break
    print(f"best: step {best_step} ({'FFDNet unchanged' if best_step == 0 else 'fine-tuned'})")


if __name__ == "__main__":
    main()
