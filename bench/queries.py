"""Queries per image: the seed protocol (n0 = 20, n = 100) against the sequential designs.

On the 50 ``imagenet-api-dev`` images against the lite2 vendor through the shipped sigma =
0.25 Stab+MSE denoiser, alpha = 0.001: mean and max queries per image (the clean reference
query included) and certified accuracy at r = 0, 0.125, 0.25, 0.375, 0.5, for

* ``seed``: fixed n0 = 20, n = 100 (its ceiling is 1.5 sigma = 0.375);
* ``target``: is the image certified at R = 0.25 (= sigma)? leader selection, cap 400;
* ``target-clean``: the same with the vendor's clean label as candidate (no selection votes);
* ``target-clean-futility``: ``target-clean`` with the predictive futility rule at the doors'
  default threshold (the rows above run without it);
* ``best``: the largest radius within 400 estimation queries per image;
* ``best-clean-futility``: the same with the clean-label candidate and the futility rule;
* ``target-budget``: ``target`` for the whole batch under one money budget (``--budget-usd``,
  local vendor priced at AWS's $1.00 per 1,000 images), spent by the allocator: likely
  certificates funded first, hopeless images given up;
* ``target-first-come``: the same budget spent first come, first served (``--no-allocate``).

Budgeted designs count every image in the accuracy (an unfunded image is not certified) and
print what the budget bought.

Each design is a resumable job under ``--runs-dir``; the seed protocol's job is shared with
bench/certify_denoisers.py. Run as ``python -m bench.queries [--images DIR] [--limit N]``.
"""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal
from pathlib import Path
from statistics import mean

from apiwrap.budgets import Price, PriceTable, format_usd
from apiwrap.engine.images import find_images
from apiwrap.engine.jobs import JobReport, JobSpec, run_job
from apiwrap.engine.settings import FUTILITY
from apiwrap.statistics.procedures import CertificationSettings
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.summary import certified_accuracy, certified_at, spending

ROOT = Path(__file__).resolve().parents[1]
RADII = report_radii(0.25)
DESIGNS: dict[str, dict[str, object]] = {
    "seed": {"n0": 20, "n": 100, "selection": "leader"},
    "fixed-clean": {"n0": 20, "n": 100, "selection": "clean"},
    "target": {"design": "target", "target_radius": 0.25, "max_queries": 400, "selection": "leader"},
    "target-clean": {"design": "target", "target_radius": 0.25, "max_queries": 400, "selection": "clean"},
    "target-clean-futility": {
        "design": "target",
        "target_radius": 0.25,
        "max_queries": 400,
        "selection": "clean",
        "futility": FUTILITY,
    },
    "best": {"design": "best", "max_queries": 400, "selection": "leader"},
    "best-clean-futility": {"design": "best", "max_queries": 400, "selection": "clean", "futility": FUTILITY},
    "target-budget": {"design": "target", "target_radius": 0.25, "max_queries": 400, "selection": "leader"},
    "target-first-come": {
        "design": "target",
        "target_radius": 0.25,
        "max_queries": 400,
        "selection": "leader",
    },
}
BUDGETED = {"target-budget": True, "target-first-come": False}  # design -> allocate
#: The local vendor at AWS's list price, so that a budget in dollars means something.
PRICES = PriceTable({"local": Price(Decimal("1.00"))})


def run(name: str, images: list[Path], args: argparse.Namespace) -> JobReport:
    settings = CertificationSettings(
        vendor=args.vendor,
        sigma=0.25,
        alpha=0.001,
        denoiser=args.denoiser,
        **DESIGNS[name],  # type: ignore[arg-type]
    )
    job = (
        f"denoisers-{args.vendor}-{args.denoiser}"
        if name == "seed"
        else f"queries-{args.vendor}-{args.denoiser}-{name}"
    )
    budget: dict[str, object] = {}
    if name in BUDGETED:
        job += f"-{args.budget_usd}usd"
        budget = {"max_usd": Decimal(args.budget_usd), "allocate": BUDGETED[name]}
    spec = JobSpec(
        settings=settings,
        job=job,
        runs_dir=args.runs_dir,
        images_in_flight=8,
        emulate=args.emulate,
        **budget,  # type: ignore[arg-type]
    )
    prices = PRICES if name in BUDGETED else None
    return asyncio.run(run_job(spec, [(str(p), p) for p in images], price_table=prices))


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
    parser.add_argument("--budget-usd", default="1.00", help="Budget of the budgeted designs.")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    images = find_images([args.images])[: args.limit]

    header = "| design | mean queries | max queries | " + " | ".join(f"r = {r:g}" for r in RADII) + " |"
    print(
        f"{len(images)} images, sigma = 0.25, alpha = 0.001, denoiser {args.denoiser}, vendor {args.vendor}"
    )
    print(header)
    print("|" + "---|" * (len(RADII) + 3))
    bought = {}
    for name in args.designs:
        report = run(name, images, args)
        results = [r for r in report.results if r.status != "failed"]
        queries = [r.queries for r in results]
        if name in BUDGETED:
            # Every image counts: one the budget did not reach is not certified.
            shares = [sum(certified_at(r, radius) for r in results) / len(results) for radius in RADII]
            cells = [f"{share:.0%}" for share in shares]
            bought[name] = (report.budget.spent, spending(results))
        else:
            cells = [f"{a.certified / a.images:.0%}" for a in certified_accuracy(results, RADII)]
        print(f"| {name} | {mean(queries):.1f} | {max(queries)} | " + " | ".join(cells) + " |", flush=True)
    for name, (spent, rows) in bought.items():
        cap = f"${args.budget_usd}"
        print(f"\n{name}: spent {format_usd(spent.micro_usd)} of {cap} ({spent.queries} queries)")
        print("| outcome | images | queries |\n|---|---|---|")
        for row in rows:
            print(f"| {row.outcome} | {row.images} | {row.queries} |")


if __name__ == "__main__":
    main()
