"""Job reports from the journal: CSV, certified-accuracy PNG, self-contained HTML, service page."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import io
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from apiwrap.adapters.emulators import EmulatorConfig, emulator
from apiwrap.budgets import Price, PriceTable, format_usd
from apiwrap.cli import app
from apiwrap.denoisers import load_denoiser
from apiwrap.engine.jobs import JobReport, JobSpec, run_job
from apiwrap.errors import ConfigurationError
from apiwrap.reports import curve_png, load_job, read_csv, render_html, write_csv
from apiwrap.reports.curve import accuracy_steps, legend_label
from apiwrap.reports.evidence import gather_evidence
from apiwrap.reports.page import rms_per_value
from apiwrap.service import create_app
from apiwrap.statistics.procedures import CertificationSettings
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.settings import ROW_FIELDS
from apiwrap.statistics.summary import certified_at
from apiwrap.testing import fake_classify
from tests.fakes import FaultyVendor
from tests.test_service import FAST, GREEN, RED, ServerThread, client, service_config, wait_for_job

PRICES = PriceTable({"fake": Price(Decimal("1.00"))})  # 1,000 micro-USD per query
SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))
CHROMIUM = Path("/usr/bin/chromium")
runner = CliRunner()


def _png(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _job(
    tmp_path: Path,
    name: str,
    *,
    images: int = 3,
    cat_share: float = 0.9,
    mode: str = "certify",
    denoiser: str = "none",
    size: int = 24,
) -> JobReport:
    """A small job over image files in tmp_path, through a fake vendor billing $1 per 1,000 queries."""
    folder = tmp_path / f"{name}-images"
    folder.mkdir()
    files = []
    for i in range(images):
        path = folder / f"img {i}.png"
        path.write_bytes(_png(i, size))
        files.append(path)
    settings = CertificationSettings(
        vendor="fake", sigma=0.25, n0=4 if mode == "certify" else 0, n=40, alpha=0.01, seed=1,
        denoiser=denoiser, mode=mode,  # type: ignore[arg-type]
    )  # fmt: skip
    spec = JobSpec(settings=settings, job=name, runs_dir=tmp_path / "runs")
    vendor = FaultyVendor(cat_share=cat_share)
    return asyncio.run(run_job(spec, [(str(p), p) for p in files], adapter=vendor, price_table=PRICES))


class _Page(HTMLParser):
    """Every attribute of every tag, and the rows of the images table."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []
        self.image_rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
        if tag == "tr" and ("class", "image-row") in attrs:
            self.image_rows += 1


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def test_the_csv_round_trips_the_jsonl_results(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for sample in SAMPLES[:2]:
        shutil.copy(sample, folder / sample.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out, reports = tmp_path / "results.jsonl", tmp_path / "reports"
    args = ["certify", str(folder), "--n0", "2", "--n", "6", "--alpha", "0.05", "--size", "64"]
    args += ["--runs-dir", str(tmp_path / "runs"), "--job", "rt", "--out", str(out), "--report", str(reports)]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output  # broken.png failed
    assert {path.name for path in reports.iterdir()} == {"rt.html", "rt.csv", "rt.png"}

    # the JSONL is written as images finish; the CSV in the journal's order
    lines = {line["image"]: line for line in map(json.loads, out.read_text().splitlines())}
    rows = read_csv(reports / "rt.csv")
    assert sorted(row["image"] for row in rows) == sorted(lines)
    renamed = {"clean_label": "reference_label"}
    for row in rows:
        line = lines[row["image"]]
        for column, value in row.items():
            if column not in {"spend_usd", "possibly_billed_usd"}:  # the ledger's, not the result's
                assert value == line[renamed.get(column, column)], (column, row["image"])
    assert [row["status"] for row in rows].count("failed") == 1
    # every row reads alone: the job and the settings that produced it travel with it
    settings = load_job(tmp_path / "runs" / "rt.sqlite").settings
    for row in [*rows, *lines.values()]:
        assert {key: row[key] for key in ("job", *ROW_FIELDS)} == {"job": "rt", **settings.row()}
    assert (settings.n0, settings.n, settings.design) == (2, 6, "fixed")


def test_csv_spend_per_image_adds_up_to_the_ledger(tmp_path: Path) -> None:
    report = _job(tmp_path, "spend")
    path = tmp_path / "spend.csv"
    write_csv(load_job(report.journal), path)
    rows = read_csv(path)

    assert sum(row["spend_usd"] for row in rows) == Decimal(report.budget.spent.micro_usd).scaleb(-6)
    # No faults: each query billed once at $0.001.
    assert [row["spend_usd"] for row in rows] == [Decimal(row["queries"]) / 1000 for row in rows]


def test_the_curve_steps_are_certified_accuracy_at_every_radius(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "steps", images=6, cat_share=0.97).journal)
    scored = [r for r in job.results if r.status in {"certified", "abstained"} and r.reference_label]
    radii = [r.radius for r in scored if r.status == "certified" and r.label == r.reference_label]
    assert radii, "the fake vendor should certify some images"

    steps = accuracy_steps(job, until=1.0)
    assert set(radii) <= {step.radius for step in steps}
    for step in steps:
        expected = sum(radius >= step.radius for radius in radii)
        assert (step.certified, step.images) == (expected, len(scored))
        assert step.low <= step.accuracy <= step.high


def test_the_png_is_drawn_for_one_job_and_for_several(tmp_path: Path) -> None:
    first = _job(tmp_path, "one", cat_share=0.97)
    second = _job(tmp_path, "two", cat_share=0.85)
    runs = str(tmp_path / "runs")
    single, both = tmp_path / "one.png", tmp_path / "both.png"

    assert runner.invoke(app, ["report", "one", "--runs-dir", runs, "--png", str(single)]).exit_code == 0
    compared = runner.invoke(app, ["report", "one", "two", "--runs-dir", runs, "--png", str(both)])
    assert compared.exit_code == 0, compared.output

    for path in (single, both):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 300
    assert single.read_bytes() != both.read_bytes()
    assert both.read_bytes() == curve_png([load_job(first.journal), load_job(second.journal)])


def test_a_predict_job_has_no_curve_and_says_why(tmp_path: Path) -> None:
    report = _job(tmp_path, "pred", mode="predict")
    with pytest.raises(ConfigurationError, match="predict job"):
        curve_png([load_job(report.journal)])
    refused = runner.invoke(
        app, ["report", "pred", "--runs-dir", str(tmp_path / "runs"), "--png", str(tmp_path / "p.png")]
    )
    assert refused.exit_code == 2 and "predict job" in refused.output
    nothing = runner.invoke(app, ["report", "pred", "--runs-dir", str(tmp_path / "runs")])
    assert nothing.exit_code == 2 and "--html" in nothing.output


def test_the_html_holds_every_image_and_no_external_reference(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "page", images=4).journal)
    page = render_html(job)
    parsed = _parse(page)

    assert parsed.image_rows == len(job.images) == 4
    for image in job.images:
        assert Path(image.name).name in page
    sources = [value for tag, name, value in parsed.attributes if name in {"src", "href", "srcset", "action"}]
    # The curve, one thumbnail per image and three noisy copies per image, all inline.
    assert len(sources) == 1 + 4 + 4 * 3
    assert all(source.startswith("data:image/") for source in sources)
    assert "url(" not in page and "@import" not in page and "://" not in page
    assert "differs from the bytes sent" not in page  # every rebuilt copy is what was sent


def test_rebuilt_noisy_copies_are_the_bytes_sent_through_a_denoiser(tmp_path: Path) -> None:
    report = _job(tmp_path, "den", images=2, denoiser="fast-stab-s025", size=32)
    job = load_job(report.journal)
    evidence, notes = gather_evidence(job, {image.name: Path(image.name) for image in job.images})
    assert notes == []
    copies = [copy for item in evidence.values() for copy in item.copies]
    assert len(copies) == 2 * 3 and all(copy.matches_sent for copy in copies)
    assert {copy.sample_index for copy in copies} == {4, 5, 6}  # the first estimation samples
    # the page says what prepared the samples, with the runtime's version (recorded, not bound)
    runtime = load_denoiser("fast-stab-s025", 0.25, device="cpu").provenance.runtime_version
    assert f"fast-stab-s025 in torch {runtime} on cpu, float32" in render_html(job)

    # A journal naming other weights: the copies would not be what was sent, so none are shown.
    with sqlite3.connect(report.journal) as db:
        (stored,) = db.execute("SELECT value FROM job WHERE key = 'parameters'").fetchone()
        tampered = json.loads(stored) | {"denoiser_weights_sha256": "0" * 64}
        db.execute("UPDATE job SET value = ? WHERE key = 'parameters'", (json.dumps(tampered),))
    page = render_html(load_job(report.journal))
    assert "other weights than the job used" in page
    assert "noisy copy" not in page


def test_the_html_without_the_source_files_says_so(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "moved").journal)
    shutil.rmtree(tmp_path / "moved-images")
    page = render_html(job)
    assert "None of the job&#x27;s source images was found here" in page
    parsed = _parse(page)
    (curve,) = [value for _, name, value in parsed.attributes if name == "src"]  # no thumbnail, no copy
    assert curve.startswith("data:image/png")
    assert parsed.image_rows == 3


def test_the_service_serves_the_report_to_the_tenant_that_owns_the_job(tmp_path: Path) -> None:
    files = [("files", ("red one.png", RED, "image/png")), ("files", ("green <b>.png", GREEN, "image/png"))]
    # 20 ms a call: the slow job below (5,000 queries, 4 at a time) is still running when asked.
    vendor = emulator("aws", EmulatorConfig(classify=fake_classify, latency_ms=20))
    with (
        vendor as endpoint,
        ServerThread(create_app(service_config(tmp_path, endpoint))) as base,
        client(base) as alice,
        client(base, "bob") as bob,
    ):
        job_id = alice.post("/v1/jobs", params=FAST, files=files).json()["id"]
        wait_for_job(alice, job_id)
        page = alice.get(f"/v1/jobs/{job_id}/report")
        peek = bob.get(f"/v1/jobs/{job_id}/report")
        schema = alice.get("/openapi.json").json()
        slow = alice.post("/v1/jobs", params={"n0": 5, "n": 5000}, files={"files": ("slow.png", RED)})
        running = alice.get(f"/v1/jobs/{slow.json()['id']}/report")
        _wait_for_a_query(alice, slow.json()["id"])  # cancelled mid-image, not before it started
        alice.delete(f"/v1/jobs/{slow.json()['id']}")
        cancelled = alice.get(f"/v1/jobs/{slow.json()['id']}/report")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parsed = _parse(page.text)
    assert parsed.image_rows == 2
    assert "red one.png" in page.text and "green &lt;b&gt;.png" in page.text  # the client's names, escaped
    sources = [value for _, name, value in parsed.attributes if name == "src"]
    assert len(sources) == 1 + 2 + 2 * 3 and all(source.startswith("data:image/") for source in sources)
    assert "differs from the bytes sent" not in page.text
    assert peek.status_code == 404
    assert "/v1/jobs/{job_id}/report" in schema["paths"]
    assert running.status_code == 409 and "running" in running.json()["detail"]
    # Cancelled mid-image: the report lists the image as pending, with no result.
    assert cancelled.status_code == 200 and '<span class="pending">pending</span>' in cancelled.text


def _wait_for_a_query(api: object, job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while api.get(f"/v1/jobs/{job_id}").json()["progress"]["queries_done"] == 0:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"job {job_id} sent no query in {timeout_s} s"
        time.sleep(0.05)


def test_the_radius_in_plain_language() -> None:
    # 0.25 over 224 x 224 x 3 values: RMS 0.25 / 388 = 0.000644 per value, 0.16 of one 8-bit level.
    assert rms_per_value(0.25, 224, 224) == pytest.approx(0.1643, abs=1e-4)


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_the_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "browser", images=3, cat_share=0.97).journal)
    page = tmp_path / "report.html"
    page.write_text(render_html(job), encoding="utf-8")
    shot = tmp_path / "shot.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        common = [str(CHROMIUM), *flags, f"--user-data-dir={profile}"]

        def dump(url: str) -> str:
            done = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done.stdout

        dom = dump(page.as_uri())
        # The table's script sorts at load when the address asks (#sort=KEY[-desc]), as a click does.
        by_name = dump(page.as_uri() + "#sort=image-desc")
        by_spend = dump(page.as_uri() + "#sort=spend")
        subprocess.run(
            [*common, "--window-size=1400,4000", f"--screenshot={shot}", page.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )

    assert _parse(dom).image_rows == 3 and 'id="curve"' in dom and 'id="headline"' in dom
    names = [image.name for image in job.images]
    assert _sort_keys(dom, 0) == names  # as journaled
    assert _sort_keys(by_name, 0) == sorted(names, reverse=True)
    spends = [float(key) for key in _sort_keys(by_spend, 4)]  # the copies column has no key
    assert spends == sorted(spends) and 'aria-sort="ascending"' in by_spend
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)

    def count(rgb: tuple[int, int, int]) -> int:
        return int(np.all(pixels == rgb, axis=1).sum())

    # The curve's markers are matplotlib's first colour; the vote bars are solid CSS boxes.
    assert count((31, 119, 180)) > 20, "the inlined curve was not drawn"
    assert count((10, 122, 47)) > 20, "the images table's vote bars were not drawn"
    assert count((243, 248, 241)) > 5000, "the headline's box was not drawn"


def _sort_keys(dom: str, column: int) -> list[str]:
    """The sort key of ``column`` in each row of the images table, in the order the DOM has them."""
    rows = re.findall(r'<tr class="image-row">(.*?)</tr>', dom, re.S)
    return [html.unescape(re.findall(r'<td[^>]*?data-sort="([^"]*)"', row)[column]) for row in rows]


def test_the_page_opens_on_a_headline_with_abstentions_by_reason(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "headline", images=6, cat_share=0.7).journal)
    page = render_html(job)
    results = job.results
    certified = [r for r in results if r.status == "certified"]
    abstained = Counter(r.abstain_reason for r in results if r.status == "abstained")
    assert certified and abstained  # the fake vendor's mix gives both

    # The headline comes before everything else the page shows; the settings are folded at the end.
    order = [page.index(marker) for marker in ('id="headline"', 'id="curve"', 'id="images"', 'id="settings"')]
    assert order == sorted(order)
    assert '<details id="settings">' in page and "target_radius" in page.split('id="settings"')[1]
    headline = page[page.index('id="headline"') : page.index("</section>")]
    agreeing = sum(r.label == r.reference_label for r in certified)
    assert f"{agreeing} of 6 images certified with the vendor's clean label" in headline
    radii = sorted(r.radius for r in certified if r.radius is not None)
    assert f"median certified radius {statistics.median(radii):.3f}" in headline
    per_certificate = format_usd(int(round(job.spent_micro_usd / len(certified), -3)))  # to 0.1 cent
    assert f"{per_certificate} per certificate" in headline
    for reason, count in abstained.items():
        assert f"<li>{count} abstained: {html.escape(reason)}</li>" in headline
    for radius in report_radii(job.settings.sigma):
        at = sum(certified_at(r, radius) for r in results)
        assert f"<li>at radius {radius:g}: {at} of 6</li>" in headline


def test_the_inline_script_is_the_only_one_the_page_allows(tmp_path: Path) -> None:
    page = render_html(load_job(_job(tmp_path, "csp", images=2).journal))
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    (policy,) = re.findall(r'Content-Security-Policy" content="([^"]+)"', page)
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline'" not in policy.split("script-src")[1]  # no other script can run


def test_no_samples_leaves_the_noisy_copies_out(tmp_path: Path) -> None:
    report = _job(tmp_path, "lean", images=2, denoiser="fast-stab-s025", size=32)
    runs = str(tmp_path / "runs")
    full, lean = tmp_path / "full.html", tmp_path / "lean.html"
    assert runner.invoke(app, ["report", "lean", "--runs-dir", runs, "--html", str(full)]).exit_code == 0
    done = runner.invoke(app, ["report", "lean", "--runs-dir", runs, "--html", str(lean), "--no-samples"])
    assert done.exit_code == 0, done.output
    assert full.read_text().count('alt="noisy copy') == 2 * 3
    page = lean.read_text()
    assert 'alt="noisy copy' not in page and page.count('class="thumb"') == 2
    assert "not shown (--no-samples)" in page and report.journal.exists()


def test_a_report_built_from_another_folder_has_its_pictures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "photo.png").write_bytes(_png(7, 32))
    monkeypatch.chdir(work)
    args = ["certify", "photo.png", "--n", "4", "--denoiser", "none", "--job", "moved"]
    assert runner.invoke(app, args).exit_code == 0  # a relative path, as a user types it
    monkeypatch.chdir(elsewhere)
    page = elsewhere / "moved.html"
    built = runner.invoke(app, ["report", "moved", "--runs-dir", str(work / "runs"), "--html", str(page)])
    assert built.exit_code == 0, built.output
    assert page.read_text().count('class="thumb"') == 1 and "not found here" not in page.read_text()


def test_the_legend_counts_images_in_the_singular_and_plural(tmp_path: Path) -> None:
    job = load_job(_job(tmp_path, "legend", images=1).journal)
    assert legend_label(job, 1).endswith("(1 image)")
    assert legend_label(job, 3).endswith("(3 images)")
