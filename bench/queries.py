"""Queries per image: the seed protocol (n0 = 20, n = 100) against the sequential designs.

On the 50 ``imagenet-api-dev`` images against the lite2 vendor through the shipped sigma =
0.25 Stab+MSE denoiser, alpha = 0.001: mean and max queries per image (the clean reference
query included) and certified accuracy at r = 0, 0.125, 0.25, 0.375, 0.5, for

* ``seed``: fixed n0 = 20, n = 100 (its ceiling is 1.5 sigma = 0.375);
* ``target``: is the image certified at R = 0.25 (= sigma)? leader selection, cap 400;
* ``target-clean``: the same with the vendor's clean label as candidate (no selection votes);
* ``best``: the largest radius within 400 estimation queries per image.

Each design is a resumable job under ``--runs-dir``; the seed protocol's job is shared with
bench/certify_denoisers.py. Run as ``python -m bench.queries [--images DIR] [--limit N]``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from statistics import mean

from apiwrap.engine import CertificationSettings, ImageResult
from apiwrap.images import find_images
from apiwrap.jobs import JobSpec, run_job
from apiwrap.report import certified_accuracy

ROOT = Path(__file__).resolve().parents[1]
RADII = (0.0, 0.125, 0.25, 0.375, 0.5)
DESIGNS: dict[str, dict[str, object]] = {
    "seed": {"n0": 20, "n": 100},
    "target": {"design": "target", "target_radius": 0.25, "max_queries": 400},
    "target-clean": {"design": "target", "target_radius": 0.25, "max_queries": 400, "selection": "clean"},
    "best": {"design": "best", "max_queries": 400},
}


def run(name: str, images: list[Path], args: argparse.Namespace) -> list[ImageResult]:
    settings = CertificationSettings(
        vendor=args.vendor,
        sigma=0.25,
        alpha=0.001,
        denoiser=args.denoiser,
        **DESIGNS[name],  # type: ignore[arg-type]
    )
    job = f"denoisers-{args.vendor}-{args.denoiser}" if name == "seed" else f"queries-{args.vendor}-{name}"
    spec = JobSpec(
        settings=settings, job=job, runs_dir=args.runs_dir, images_in_flight=8, emulate=args.emulate
    )
    return asyncio.run(run_job(spec, [(str(p), p) for p in images])).results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared/data/imagenet-api-dev")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N images.")
    parser.add_argument("--vendor", default="local")
    parser.add_argument("--emulate", action="store_true", help="Send through the vendor's wire emulator.")
    parser.add_argument("--denoiser", default="fast-stab-s025")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS))
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    images = find_images([args.images])[: args.limit]

    header = "| design | mean queries | max queries | " + " | ".join(f"r = {r:g}" for r in RADII) + " |"
    print(
        f"{len(images)} images, sigma = 0.25, alpha = 0.001, denoiser {args.denoiser}, vendor {args.vendor}"
    )
    print(header)
    print("|" + "---|" * (len(RADII) + 3))
    for name in args.designs:
        results = [r for r in run(name, images, args) if r.status != "failed"]
        queries = [r.queries for r in results]
        cells = [f"{a.certified / a.images:.0%}" for a in certified_accuracy(results, RADII)]
        print(f"| {name} | {mean(queries):.1f} | {max(queries)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
