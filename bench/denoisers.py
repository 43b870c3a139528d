"""Denoiser benchmark: speed, peak memory and quality of every architecture on this CPU.

For each architecture: samples/s at 224x224 for batch 1 and a larger batch, the peak
resident memory of a fresh process running it, PSNR / SSIM at sigma = 0.25 on CBSD68 for
the shipped checkpoints of that architecture (untrained architectures have no PSNR worth
printing), and optionally how often the lite2 classifier keeps its clean top-1 label on
denoised noisy copies of the first images of imagenet-api-dev (evaluation only).

Memory: each (architecture, batch) runs in its own subprocess; "peak RSS" is that process's
`resource.getrusage(RUSAGE_SELF).ru_maxrss` after inference (interpreter, torch and weights
included) and "inference delta" is its growth from just before the first call (activations and
oneDNN scratch space).

    python bench/denoisers.py --threads 2 --batch 8 [--agreement-images 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apiwrap.denoisers import ARCHITECTURES, Denoiser, available_denoisers, create_architecture, load_denoiser
from apiwrap.denoisers.training import DEFAULT_EVAL_DATA, DEFAULT_TRAINING_DATA

EVALUATION_SET = DEFAULT_TRAINING_DATA.parent / "imagenet-api-dev"
SIZE = 224
SIGMA = 0.25


def _measure_speed(architecture: str, batch: int, threads: int, seconds: float) -> dict[str, float]:
    """Runs inside a fresh process: samples/s and memory of one architecture at one batch size."""
    torch.set_num_threads(threads)
    denoiser = Denoiser(create_architecture(architecture), name=architecture, sigma=SIGMA, device="cpu")
    noisy = torch.rand(batch, 3, SIZE, SIZE) + SIGMA * torch.randn(batch, 3, SIZE, SIZE)
    denoiser.max_batch = batch
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    denoiser(noisy)  # warm-up, untimed: oneDNN picks and caches its kernels on the first call
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        denoiser(noisy)
        calls += 1
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "samples_per_s": calls * batch / elapsed,
        "peak_rss_mib": peak / 1024,
        "inference_delta_mib": (peak - before) / 1024,
    }


def _speed_in_subprocess(architecture: str, batch: int, threads: int, seconds: float) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", architecture, str(batch), str(threads), str(seconds)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _quality(architecture: str, agreement_images: int) -> list[dict[str, object]]:
    """PSNR/SSIM (and lite2 agreement) of the shipped checkpoints of one architecture at SIGMA."""
    from apiwrap.denoisers.evaluation import classifier_agreement, evaluate_folder

    rows = []
    names = [name for name in available_denoisers()[1:] if _architecture_of(name) == architecture]
    if architecture == "fast":
        names = ["none", *names]  # the no-denoiser baseline rides along with the fast row
    for name in names:
        denoiser = load_denoiser(name, SIGMA, device="cpu") if name == "none" else _load_at_own_sigma(name)
        if denoiser.sigma not in (None, SIGMA):
            continue
        scores = evaluate_folder(denoiser, DEFAULT_EVAL_DATA, SIGMA)
        row: dict[str, object] = {"checkpoint": name, "psnr": scores.psnr, "ssim": scores.ssim}
        if agreement_images:
            from apiwrap.denoisers.classifiers import load_classifier

            agreement = classifier_agreement(
                denoiser,
                load_classifier("efficientnet-lite2"),
                EVALUATION_SET,
                SIGMA,
                max_images=agreement_images,
            )
            row["agreement"] = agreement.agreement
        rows.append(row)
    return rows


def _load_at_own_sigma(name: str) -> Denoiser:
    return load_denoiser(name, SIGMA, force=True, device="cpu")


def _architecture_of(name: str) -> str:
    return _load_at_own_sigma(name).metadata["architecture"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="the larger batch size measured besides 1")
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum timed duration per measurement")
    parser.add_argument("--architectures", nargs="*", default=list(ARCHITECTURES))
    parser.add_argument(
        "--agreement-images", type=int, default=0, help="imagenet-api-dev images, 10 noises each"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        architecture, batch, threads, seconds = arguments.worker
        print(json.dumps(_measure_speed(architecture, int(batch), int(threads), float(seconds))))
        return

    console = Console(width=200)
    results = []
    for architecture in arguments.architectures:
        parameters = sum(parameter.numel() for parameter in create_architecture(architecture).parameters())
        single = _speed_in_subprocess(architecture, 1, arguments.threads, arguments.seconds)
        batched = _speed_in_subprocess(architecture, arguments.batch, arguments.threads, arguments.seconds)
        quality = _quality(architecture, arguments.agreement_images)
        row = {"architecture": architecture, "parameters": parameters, "batch_1": single, "batched": batched}
        results.append({**row, "quality": quality})
        console.print(f"measured {architecture}")

    reference = next(
        (row["batched"]["samples_per_s"] for row in results if row["architecture"] == "dncnn"), None
    )
    table = Table(title=f"Denoisers at {SIZE}x{SIZE} on {arguments.threads} CPU threads, sigma = {SIGMA}")
    columns = ["architecture", "params", "img/s b=1", f"img/s b={arguments.batch}", "x DnCNN (batched)"]
    columns += [f"peak RSS b={arguments.batch} (MiB)", "inference delta (MiB)", "checkpoint"]
    for column in [*columns, "PSNR / SSIM CBSD68", "lite2 agreement"]:
        table.add_column(column)
    for row in results:
        batched = row["batched"]
        speedup = f"{batched['samples_per_s'] / reference:.1f}" if reference else "-"
        quality = row["quality"] or [{"checkpoint": "untrained"}]
        for index, scores in enumerate(quality):
            first = index == 0
            table.add_row(
                row["architecture"] if first else "",
                f"{row['parameters'] / 1e6:.2f}M" if first else "",
                f"{row['batch_1']['samples_per_s']:.1f}" if first else "",
                f"{batched['samples_per_s']:.1f}" if first else "",
                speedup if first else "",
                f"{batched['peak_rss_mib']:.0f}" if first else "",
                f"{batched['inference_delta_mib']:.0f}" if first else "",
                str(scores["checkpoint"]),
                f"{scores['psnr']:.2f} / {scores['ssim']:.3f}" if "psnr" in scores else "-",
                f"{scores['agreement']:.0%}" if "agreement" in scores else "-",
            )
    console.print(table)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
