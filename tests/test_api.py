"""The Python API (apiwrap.certify / predict / Certifier), and the examples of its docs run as tests."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import apiwrap
from apiwrap import CertificationSettings, ConfigurationError, ImageError, JournalError
from apiwrap.adapters import Adapter, ImageLimits, Label, VendorAnswer, VendorError, create_adapter
from apiwrap.adapters.base import LABEL_RULE_VERSION
from apiwrap.budgets import Price, PriceTable
from apiwrap.engine.journal import Journal
from apiwrap.engine.replay import replay_journal
from apiwrap.testing import ScriptedAdapter, solid_png

PRICES = PriceTable({"scripted": Price(Decimal("2.00"))})  # 2,000 micro-USD per image


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _small_samples(options: dict[str, object]) -> dict[str, object]:
    """Few samples: n only for the fixed design (a sequential design refuses an n it would ignore)."""
    if "settings" in options:
        return {}
    sequential = options.keys() & {"target_radius", "max_queries"}
    return {"n0": 3} if sequential else {"n0": 3, "n": 12}


def _certify(images: object, tmp_path: Path, adapter: ScriptedAdapter | None = None, **options: object):
    return apiwrap.certify(
        images,  # type: ignore[arg-type]
        vendor=adapter or ScriptedAdapter([], then="cat"),
        prices=PRICES,
        runs_dir=tmp_path,
        **_small_samples(options) | options,  # type: ignore[arg-type]
    )


def test_a_certificate_matches_the_replay_of_its_journal_and_its_spend(tmp_path: Path) -> None:
    job = _certify(solid_png(), tmp_path, job="cats")
    [result] = job.results
    assert result.status == "certified" and result.label == "cat" and result.radius is not None
    assert (result.votes_for_candidate, result.estimation_votes) == (12, 12)
    assert job.billable_queries == 1 + 12 == result.queries  # the clean label is the candidate
    assert job.spent_usd == Decimal("0.002") * job.billable_queries
    assert job.journal == tmp_path / "cats.sqlite" and job.job == "cats"
    [replayed] = replay_journal(job.journal).results
    assert replayed.radius == result.radius and replayed.label == result.label


def test_every_form_of_one_image_is_certified_as_the_same_pixels(tmp_path: Path) -> None:
    pixels = _pixels()
    path = tmp_path / "picture.png"
    path.write_bytes(_png(pixels))
    forms = {
        "bytes": _png(pixels),
        "pil": Image.fromarray(pixels),
        "uint8": pixels,
        "float": pixels.astype(np.float64) / 255.0,
    }
    job = _certify({**forms, "path": path}, tmp_path)
    digests = {result.image: result.digest for result in job.results}
    assert list(digests) == [*forms, "path"]
    assert len(set(digests.values())) == 1
    assert all(result.status == "certified" for result in job.results)


def test_images_unnamed_folders_and_batches(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in (1, 2):
        (folder / f"{seed}.png").write_bytes(_png(_pixels(seed)))
    batch = np.stack([_pixels(3), _pixels(4)])
    job = _certify([folder, batch[0], _png(_pixels(5))], tmp_path)
    assert [r.image for r in job.results] == [
        str(folder / "1.png"),
        str(folder / "2.png"),
        "image-1",
        "image-2",
    ]
    assert [r.image for r in _certify(batch, tmp_path).results] == ["image-0", "image-1"]


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (np.zeros((8, 8), dtype=np.uint8), "HxWx3"),
        (np.zeros((8, 8, 3), dtype=np.int64), "uint8 or float"),
        (np.full((8, 8, 3), 1.5), r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan), r"\[0, 1\]"),
        ([[1, 2, 3]], "cannot certify a list"),
    ],
)
def test_a_bad_in_memory_image_is_refused_before_anything_is_sent(
    tmp_path: Path, image: object, problem: str
) -> None:
    adapter = ScriptedAdapter([])
    with pytest.raises(ImageError, match=problem):
        _certify([solid_png(), image], tmp_path, adapter)
    assert adapter.calls == []


def test_a_corrupt_file_fails_alone(tmp_path: Path) -> None:
    job = _certify({"broken": b"not an image", "fine": solid_png()}, tmp_path)
    assert [r.status for r in job.results] == ["failed", "certified"]
    assert "not a readable image" in (job.results[0].error or "")


def test_two_images_under_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="given twice"):
        _certify([tmp_path / "a.png", tmp_path / "a.png"], tmp_path)


def test_the_same_job_resumes_without_a_query(tmp_path: Path) -> None:
    first = _certify(solid_png(), tmp_path, job="again")
    adapter = ScriptedAdapter([], then="dog")
    second = _certify(solid_png(), tmp_path, adapter, job="again")
    assert adapter.calls == [] and second.requests == 0
    assert second.results[0].label == first.results[0].label == "cat"
    assert second.spent_usd == first.spent_usd


def test_the_journal_binds_the_label_rule_and_the_vendors_model_options(tmp_path: Path) -> None:
    adapter = ScriptedAdapter([])
    adapter.model_options = {"max_labels": 10}
    job = _certify(solid_png(), tmp_path, adapter, job="bound")
    journal = Journal.open_existing(job.journal)
    try:
        parameters = journal.parameters() or {}
    finally:
        journal.close()
    assert parameters["label_rule"] == LABEL_RULE_VERSION
    assert parameters["model_options"] == {"max_labels": 10}

    changed = ScriptedAdapter([])
    changed.model_options = {"max_labels": 5}
    with pytest.raises(JournalError, match="model_options"):
        _certify(solid_png(), tmp_path, changed, job="bound")
    assert changed.calls == []


def test_vendor_model_options_name_no_secret_and_no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, secret = "http://127.0.0.1:9", "s3cr3t-value"
    adapters = {
        "aws": create_adapter(
            "aws", endpoint=endpoint, aws_access_key_id=secret, aws_secret_access_key=secret, max_labels=7
        ),
        "google": create_adapter("google", endpoint=endpoint, api_key=secret, max_results=7),
        "azure": create_adapter("azure", endpoint=endpoint, key=secret, language="de"),
        "clarifai": create_adapter("clarifai", endpoint=endpoint, pat=secret, version_id="v7"),
        "http": create_adapter(
            "http", endpoint=endpoint, headers={"Authorization": secret}, labels_path="result.tags"
        ),
    }
    expected = {"aws": "max_labels", "google": "max_results", "azure": "language", "clarifai": "version_id"}
    for vendor, adapter in adapters.items():
        recorded = json.dumps(dict(adapter.model_options))
        assert secret not in recorded and endpoint not in recorded, vendor
        asyncio.run(adapter.aclose())
    for vendor, key in expected.items():
        assert adapters[vendor].model_options[key] in (7, "de", "v7")
    assert adapters["http"].model_options["labels_path"] == "result.tags"


class _Bare:
    """An adapter by structure only: no model options, no aclose."""

    name = "scripted"
    max_batch = 1
    limits = ImageLimits(max_bytes=10_000_000)

    async def label_batch(self, images: Sequence[bytes]) -> list[VendorAnswer | VendorError]:
        return [VendorAnswer((Label("cat", 1.0),), "bare-1", "{}") for _ in images]


class _Inheriting(_Bare, Adapter):
    pass


def test_an_adapter_object_is_told_what_it_lacks_and_a_subclass_inherits_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match=r"_Bare lacks model_options, aclose of the apiwrap\.adapters\.Adapter"
    ):
        apiwrap.Certifier(_Bare(), runs_dir=tmp_path)
    with pytest.raises(ConfigurationError, match=r"subclass apiwrap\.adapters\.Adapter to inherit"):
        apiwrap.Certifier(_Bare(), runs_dir=tmp_path)
    with pytest.raises(
        ConfigurationError, match="object lacks name, max_batch, limits, model_options, label_batch"
    ):
        apiwrap.Certifier(object(), runs_dir=tmp_path)  # type: ignore[arg-type]

    job = apiwrap.certify(solid_png(), vendor=_Inheriting(), prices=PRICES, runs_dir=tmp_path, n0=3, n=12)
    journal = Journal.open_existing(job.journal)
    try:
        assert (journal.parameters() or {})["model_options"] == {}
    finally:
        journal.close()
    assert job.results[0].label == "cat"


def test_predict_and_settings_objects(tmp_path: Path) -> None:
    job = apiwrap.predict(
        solid_png(), vendor=ScriptedAdapter([]), prices=PRICES, runs_dir=tmp_path, n=10, alpha=0.01
    )
    assert job.results[0].status == "predicted" and job.billable_queries == 1 + 10
    settings = CertificationSettings(vendor="scripted", n0=3, n=12, sigma=0.5)
    by_object = apiwrap.certify(
        solid_png(), vendor=ScriptedAdapter([]), prices=PRICES, runs_dir=tmp_path, settings=settings
    )
    by_keywords = _certify(solid_png(), tmp_path, sigma=0.5)
    assert by_object.results[0].radius == by_keywords.results[0].radius


def test_a_sequential_design_is_chosen_as_on_the_command_line(tmp_path: Path) -> None:
    job = _certify(solid_png(), tmp_path, target_radius=0.1, max_queries=200, job="sequential")
    [result] = job.results
    assert result.status == "certified" and result.estimation_votes < 200  # stopped early
    journal = Journal.open_existing(job.journal)
    try:
        assert (journal.parameters() or {})["design"] == "target"
    finally:
        journal.close()


def test_a_budget_stops_the_job_and_says_so(tmp_path: Path) -> None:
    job = _certify([solid_png(), _png(_pixels())], tmp_path, max_job_queries=20)
    assert job.budget_exhausted and job.billable_queries <= 20
    assert "budget" in {r.status for r in job.results}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: _certify(solid_png(), p, sigmaa=0.5), TypeError, "sigmaa"),
        (
            lambda p: apiwrap.predict(solid_png(), vendor=ScriptedAdapter([]), runs_dir=p, n0=5),
            ConfigurationError,
            "n0: applies to certify only",
        ),
        (
            lambda p: _certify(
                solid_png(), p, settings=CertificationSettings(vendor="scripted", mode="predict", n0=0)
            ),
            ConfigurationError,
            "predict",
        ),
        (
            lambda p: _certify(solid_png(), p, settings=CertificationSettings(vendor="aws")),
            ConfigurationError,
            "aws",
        ),
        (lambda p: _certify(solid_png(), p, sigma=-1.0), ConfigurationError, "sigma"),
        (
            lambda p: apiwrap.certify(solid_png(), vendor="nope", runs_dir=p),
            ConfigurationError,
            "unknown vendor",
        ),
        (lambda p: apiwrap.certify(solid_png(), vendor=object(), runs_dir=p), ConfigurationError, "adapter"),
        (lambda p: apiwrap.certify([], runs_dir=p), ConfigurationError, "no images"),
    ],
)
def test_wrong_calls_fail_clearly(tmp_path: Path, call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(tmp_path)


async def test_the_blocking_functions_point_to_the_certifier_inside_a_running_loop(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Certifier"):
        apiwrap.certify(solid_png(), vendor=ScriptedAdapter([]), runs_dir=tmp_path)


async def test_a_certifier_runs_several_jobs_and_leaves_a_given_adapter_open(tmp_path: Path) -> None:
    adapter = ScriptedAdapter([], then="cat")
    async with apiwrap.Certifier(adapter, runs_dir=tmp_path, prices=PRICES) as certifier:
        first = await certifier.certify(solid_png(), n0=3, n=12, job="one")
        second = await certifier.predict(solid_png(), n=20, job="two")
    assert (first.results[0].status, second.results[0].status) == ("certified", "predicted")
    assert not adapter.closed
    with pytest.raises(RuntimeError, match="async with"):
        await certifier.certify(solid_png(), n0=3, n=12)


async def test_a_certifier_opens_a_vendor_by_name_for_several_jobs(
    vendor_emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    running = vendor_emulator("google")  # answers by the dominant colour: red is "goldfish"
    options = {"endpoint": running.endpoint, "max_results": 3}
    async with apiwrap.Certifier("google", vendor_options=options, runs_dir=tmp_path) as certifier:
        red = await certifier.certify(solid_png((250, 0, 0)), n0=3, n=12, job="red")
        green = await certifier.predict(solid_png((0, 250, 0)), n=20, job="green")
    assert (red.results[0].label, green.results[0].label) == ("goldfish", "tree frog")
    price = PriceTable.default().price("google").micro_usd_per_image
    assert red.spent_usd == Decimal(price * red.billable_queries).scaleb(-6)
    journal = Journal.open_existing(red.journal)
    try:
        assert (journal.parameters() or {})["model_options"] == {"max_results": 3}
    finally:
        journal.close()


def test_only_a_vendor_with_an_emulator_is_emulated(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no emulator for 'local'"):
        apiwrap.certify(solid_png(), vendor="local", emulate=True, runs_dir=tmp_path)
