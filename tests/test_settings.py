"""One settings model through every door: the same options resolve to the same job settings in the
command line, the Python API and the service, and a bad value is refused at each door before a
journal is opened or a query bought."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import apiwrap
from apiwrap.adapters import AuthError, register
from apiwrap.cli import app
from apiwrap.denoisers import recommended_denoiser, recommended_sigma
from apiwrap.engine.journal import Journal
from apiwrap.engine.settings import (
    CertificationOptions,
    ConnectionOptions,
    JobOptions,
    SettingsError,
    parse_options,
    resolve_settings,
    settings_options,
)
from apiwrap.service import ServiceConfig, TenantConfig, VendorConfig, create_app, hash_key
from apiwrap.statistics.settings import CertificationSettings
from apiwrap.testing import ScriptedAdapter, solid_png

VENDOR = "doors"
KEY = "key-doors"
runner = CliRunner()
#: Every request the refusing vendor received, across doors: a refused option must add none.
CALLS: list[int] = []


def refusing_vendor(**options: object) -> ScriptedAdapter:
    """A vendor that refuses the credentials at its first request: the job stops right after
    binding its parameters in the journal, so each door's resolved settings are read cheaply."""

    class Counting(ScriptedAdapter):
        async def label_batch(self, images):  # type: ignore[no-untyped-def]
            CALLS.append(len(images))
            return await super().label_batch(images)

    return Counting(itertools.repeat(AuthError("refused")), name=VENDOR)


register(VENDOR, f"{__name__}:refusing_vendor")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    path.write_bytes(solid_png((200, 30, 30)))
    return path


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(f'[prices.{VENDOR}]\nusd_per_1000 = "1.00"\n')
    return path


def _flags(options: dict[str, Any]) -> list[str]:
    return [part for name, value in options.items() for part in ("--" + name.replace("_", "-"), str(value))]


def _parameters(journal: Path) -> dict[str, Any]:
    opened = Journal.open_existing(journal)
    try:
        parameters = opened.parameters()
    finally:
        opened.close()
    assert parameters is not None
    return parameters


def _cli(mode: str, image: Path, runs: Path, options: dict[str, Any]) -> dict[str, Any]:
    args = [mode, str(image), "--vendor", VENDOR, "--runs-dir", str(runs), "--job", "cli", *_flags(options)]
    args += ["--prices", str(image.with_name("prices.toml"))]
    result = runner.invoke(app, args)
    assert result.exit_code == 5, result.output  # the vendor refused the credentials: job aborted
    return _parameters(runs / "cli.sqlite")


def _python(mode: str, image: Path, runs: Path, options: dict[str, Any]) -> dict[str, Any]:
    call = apiwrap.certify if mode == "certify" else apiwrap.predict
    prices = image.with_name("prices.toml")
    job = call(image, vendor=VENDOR, runs_dir=runs, job="python", prices=prices, **options)
    parameters = _parameters(job.journal)
    # JobResult.settings says what ran: exactly what the journal binds.
    assert {name: parameters[name] for name in CertificationSettings.__dataclass_fields__} == vars_of(
        job.settings
    )
    return parameters


def vars_of(settings: CertificationSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in CertificationSettings.__dataclass_fields__}


@pytest.fixture
def service(tmp_path: Path, prices: Path) -> Iterator[tuple[TestClient, Path]]:
    runs = tmp_path / "service"
    config = ServiceConfig(
        runs_dir=runs,
        prices=prices,
        vendors={VENDOR: VendorConfig(VENDOR)},
        tenants={"t": TenantConfig("t", hash_key(KEY))},
    )
    with TestClient(create_app(config), headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client, runs


def _service(
    client: TestClient, runs: Path, mode: str, image: Path, options: dict[str, Any]
) -> dict[str, Any]:
    files = {"files": ("red.png", image.read_bytes(), "image/png")}
    answer = client.post("/v1/jobs", params={"mode": mode, **options}, files=files)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 60
    while (view := client.get(f"/v1/jobs/{job_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    parameters = _parameters(runs / f"{job_id}.sqlite")
    # The job view shows the settings the job ran with.
    assert view["settings"] == {name: parameters[name] for name in view["settings"]}
    return parameters


# (mode, options as every door takes them, what the rules must give: design, sigma)
DOORS = [
    ("certify", {}, ("fixed", 0.25)),
    ("certify", {"n": 30}, ("fixed", 0.25)),
    ("certify", {"target_radius": 0.1}, ("target", recommended_sigma(0.1))),
    ("certify", {"target_radius": 0.3, "max_queries": 50}, ("target", recommended_sigma(0.3))),
    ("certify", {"max_queries": 60}, ("best", 0.25)),
    ("certify", {"selection": "leader", "n0": 3, "n": 10, "denoiser": "none"}, ("fixed", 0.25)),
    ("certify", {"sigma": 0.5, "target_radius": 0.25, "denoiser": "none"}, ("target", 0.5)),
    ("certify", {"alpha": 0.01, "seed": 3, "size": 64, "denoiser": "fast-stab-s025"}, ("fixed", 0.25)),
    ("certify", {"sigma": 0.12}, ("fixed", 0.12)),
    ("predict", {}, ("fixed", 0.25)),
    ("predict", {"n": 20, "sigma": 0.5}, ("fixed", 0.5)),
]


@pytest.mark.parametrize(("mode", "options", "expected"), DOORS, ids=lambda value: str(value))
def test_the_same_options_resolve_to_the_same_job_through_every_door(
    mode: str,
    options: dict[str, Any],
    expected: tuple[str, float],
    image: Path,
    prices: Path,
    tmp_path: Path,
    service: tuple[TestClient, Path],
) -> None:
    through_cli = _cli(mode, image, tmp_path / "cli", options)
    through_python = _python(mode, image, tmp_path / "python", options)
    through_service = _service(*service, mode, image, options)
    # Everything the journal binds (settings, noise scheme, encoding, denoiser weights, label
    # rule, the vendor's model options) is the same whichever door started the job.
    assert through_cli == through_python == through_service
    design, sigma = expected
    assert (through_cli["design"], through_cli["sigma"]) == (design, sigma)
    wanted = options.get("denoiser", "auto")
    assert through_cli["denoiser"] == (recommended_denoiser(sigma) if wanted == "auto" else wanted)


def test_python_with_no_options_certifies_exactly_as_the_command_line(
    image: Path, prices: Path, tmp_path: Path
) -> None:
    job = apiwrap.certify(image, vendor=VENDOR, runs_dir=tmp_path / "python", job="plain", prices=prices)
    assert job.settings.denoiser == recommended_denoiser(0.25) != "none"
    assert _parameters(job.journal) == _cli("certify", image, tmp_path / "cli", {})


# -- validation: each bad value is refused at every door and buys nothing ------------------------------

BAD_SETTINGS = [
    ({"sigma": math.nan}, "sigma"),
    ({"sigma": math.inf}, "sigma"),
    ({"sigma": -1.0}, "sigma"),
    ({"sigma": 0.0}, "sigma"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": 1.0}, "alpha"),
    ({"alpha": math.nan}, "alpha"),
    ({"n": 0}, "n"),
    ({"n": -5}, "n"),
    ({"n0": 0, "selection": "leader"}, "n0"),
    ({"target_radius": 0.0}, "target_radius"),
    ({"target_radius": math.nan}, "target_radius"),
    ({"max_queries": 0}, "max_queries"),
    ({"size": 4}, "size"),
    ({"selection": "cleen"}, "selection"),
    ({"target_radius": 0.25, "n": 50}, "n"),  # n would be ignored by the sequential design
]
BAD_RUN = [
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": -1}, "concurrency"),
    ({"tps": -1.0}, "tps"),
    ({"tps": 0.0}, "tps"),
    ({"tps": math.nan}, "tps"),
    ({"max_job_queries": -1}, "max_job_queries"),
    ({"max_usd": "-1"}, "max_usd"),
    ({"max_usd": "lots"}, "max_usd"),
    ({"max_attempts": 0}, "max_attempts"),
]


def _nothing_bought(runs: Path, calls_before: int) -> None:
    journals = [path for path in runs.glob("*.sqlite") if path.name != "service.sqlite"]  # the job store
    assert not journals, "a journal was opened"
    assert len(CALLS) == calls_before, "a query was sent"


@pytest.mark.parametrize(("options", "name"), BAD_SETTINGS + BAD_RUN, ids=lambda value: str(value))
def test_the_command_line_refuses_a_bad_value_with_exit_2(
    options: dict[str, Any], name: str, image: Path, prices: Path, tmp_path: Path
) -> None:
    before = len(CALLS)
    runs = tmp_path / "runs"
    args = ["certify", str(image), "--vendor", VENDOR, "--runs-dir", str(runs), "--prices", str(prices)]
    args += _flags(options)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--" + name.replace("_", "-") in result.output
    _nothing_bought(runs, before)


@pytest.mark.parametrize(("options", "name"), BAD_SETTINGS + BAD_RUN, ids=lambda value: str(value))
def test_python_refuses_a_bad_value_with_a_settings_error(
    options: dict[str, Any], name: str, image: Path, prices: Path, tmp_path: Path
) -> None:
    before = len(CALLS)
    runs = tmp_path / "runs"
    connection = {key: options[key] for key in options.keys() & {"concurrency", "tps", "max_attempts"}}
    job = {key: value for key, value in options.items() if key not in connection}
    with pytest.raises(SettingsError) as raised:
        apiwrap.certify(image, vendor=VENDOR, runs_dir=runs, prices=prices, **connection, **job)
    assert name in {problem for problem, _ in raised.value.problems}
    assert isinstance(raised.value, apiwrap.ConfigurationError)
    _nothing_bought(runs, before)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        *BAD_SETTINGS,
        ({"design": "fixed", "target_radius": 0.25}, "target_radius"),
        ({"design": "target"}, "design"),
        ({"design": "sequential"}, "design"),
        ({"mode": "predict", "n0": 5}, "n0"),
        ({"mode": "predict", "target_radius": 0.25}, "target_radius"),
        ({"denoiser": "/etc/passwd"}, "denoiser"),
    ],
    ids=lambda value: str(value),
)
def test_the_service_refuses_a_bad_value_with_422(
    params: dict[str, Any], name: str, image: Path, service: tuple[TestClient, Path]
) -> None:
    client, runs = service
    before = len(CALLS)
    files = {"files": ("red.png", image.read_bytes(), "image/png")}
    answer = client.post("/v1/jobs", params={key: str(value) for key, value in params.items()}, files=files)
    assert answer.status_code == 422, answer.text
    assert name in {error["loc"][-1] for error in answer.json()["errors"]}
    assert client.get("/v1/jobs").json()["jobs"] == []
    _nothing_bought(runs, before)


def test_the_service_infers_the_target_design_from_a_target_radius(
    image: Path, service: tuple[TestClient, Path]
) -> None:
    parameters = _service(*service, "certify", image, {"target_radius": 0.25})
    assert (parameters["design"], parameters["target_radius"]) == ("target", 0.25)


def test_estimate_refuses_an_unknown_mode_and_resolves_the_design(image: Path) -> None:
    assert runner.invoke(app, ["estimate", str(image), "--mode", "certfy"]).exit_code == 2
    sequential = runner.invoke(app, ["estimate", str(image), "--vendor", "aws", "--target-radius", "0.25"])
    assert sequential.exit_code == 0, sequential.output
    assert "target design" in sequential.output and "401 queries per image" in sequential.output


# -- the rules themselves ----------------------------------------------------------------------------


def _resolve(mode: str = "certify", **options: Any) -> CertificationSettings:
    return resolve_settings(parse_options(CertificationOptions, options), vendor="v", mode=mode)  # type: ignore[arg-type]


def test_the_design_follows_the_options_and_a_contradiction_is_refused() -> None:
    assert _resolve().design == "fixed"
    assert _resolve(target_radius=0.2).design == "target"
    assert _resolve(max_queries=100).design == "best"
    assert _resolve(target_radius=0.2, max_queries=100).max_queries == 100
    assert _resolve(design="best").max_queries == CertificationSettings(vendor="v").max_queries
    for contradiction in ({"design": "fixed", "max_queries": 9}, {"design": "best", "target_radius": 0.2}):
        with pytest.raises(SettingsError):
            _resolve(**contradiction)


def test_predict_refuses_what_only_certify_reads_and_draws_no_selection_samples() -> None:
    assert _resolve("predict").n0 == 0
    for option in ({"n0": 5}, {"selection": "leader"}, {"max_queries": 9}, {"design": "target"}):
        with pytest.raises(SettingsError, match="certify only"):
            _resolve("predict", **option)


def test_selection_lead_is_refused_where_nothing_reads_it() -> None:
    assert _resolve(target_radius=0.2, selection="leader", selection_lead=3).selection_lead == 3
    with pytest.raises(SettingsError, match="selection_lead"):
        _resolve(selection_lead=3)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_options(CertificationOptions, {"sigma": -1, "alpha": 3, "n": 0})
    assert {name for name, _ in raised.value.problems} == {"sigma", "alpha", "n"}
    assert "got -1" in str(raised.value)


@pytest.mark.parametrize(("mode", "options", "expected"), DOORS, ids=lambda value: str(value))
def test_resolved_settings_resolve_to_themselves(
    mode: str, options: dict[str, Any], expected: tuple[str, float]
) -> None:
    settings = _resolve(mode, **options)
    assert _resolve(mode, **settings_options(settings)) == settings


def _documented(table_heading: str) -> dict[str, str]:
    """The ``| `option` | default | ...`` rows of a table in docs/settings.md, by option."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    section = text.split(table_heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return {name.strip().strip("`"): default.strip() for name, default in rows}


def test_the_documented_options_and_defaults_are_the_models() -> None:
    documented = _documented("## Certification options")
    assert set(documented) == set(CertificationOptions.model_fields)
    for name, field in CertificationOptions.model_fields.items():
        if field.default is not None:
            assert documented[name].strip("`").startswith(str(field.default)), name
    run = _documented("## Job and connection options")
    assert set(run) == set(JobOptions.model_fields) | set(ConnectionOptions.model_fields)
    for name in ("concurrency", "max_attempts"):
        assert run[name] == str(ConnectionOptions.model_fields[name].default)
