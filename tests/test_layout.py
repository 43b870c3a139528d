"""The package as installed: one import root beside namesakes, a light decision layer, one error tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from apiwrap import ApiwrapError, ConfigurationError, ImageError, JobAborted, JournalError, MissingExtra
from apiwrap.adapters import AuthError, VendorError, create_adapter
from apiwrap.budgets import Budget, BudgetExceeded, Price
from apiwrap.denoisers import load_denoiser
from apiwrap.engine.images import load_image
from apiwrap.engine.journal import Journal
from apiwrap.engine.scheduler import QueryScheduler
from apiwrap.statistics.procedures import CertificationSettings
from apiwrap.testing import ScriptedAdapter, solid_png

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "ILSVRC2012_val_00006696.png"
HEAVY = ("torch", "PIL", "sqlite3")


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    outcome = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env=clean | env, timeout=600, check=False
    )
    assert outcome.returncode == 0, f"{command}\n{outcome.stdout}\n{outcome.stderr}"
    return outcome


def _wheel(source: Path, out: Path) -> Path:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "-w", str(out), "."], source)
    [wheel] = out.glob("*.whl")
    return wheel


def _stub_distribution(folder: Path) -> Path:
    """A distribution that owns the top-level names apiwrap's folders would have taken."""
    for name in ("adapters", "budgets", "denoisers"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f'OWNER = "stub-namesakes"\nNAME = "{name}"\n')
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "stub-namesakes"
            version = "1.0"

            [tool.setuptools]
            packages = ["adapters", "budgets", "denoisers"]
            """
        )
    )
    return folder


@pytest.mark.slow
def test_the_wheel_installs_beside_namesakes_and_certifies(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build would leave build/ and egg-info in the checkout.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("apiwrap", "adapters", "budgets", "denoisers"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    wheels = tmp_path / "wheels"
    apiwrap_wheel = _wheel(source, wheels)
    stub_wheel = _wheel(_stub_distribution(tmp_path / "stub"), tmp_path / "stub-wheels")
    with zipfile.ZipFile(apiwrap_wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        assert any(name.startswith("apiwrap/denoisers/checkpoints/") for name in archive.namelist())
    assert {top for top in tops if not top.endswith(".dist-info")} == {"apiwrap"}

    # A fresh environment: third-party packages are read from this one's site-packages (a path
    # on sys.path; .pth files there, the editable install's among them, are not run).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run([str(python), "-c", purelib], tmp_path).stdout.strip())
    (site / "third_party.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--no-deps",
        "--no-index",
    ]
    _run([*install, str(stub_wheel), str(apiwrap_wheel)], tmp_path)

    probe = "import adapters, apiwrap.adapters as a\nprint(a.__file__, adapters.OWNER)"
    where = _run([str(python), "-c", probe], tmp_path).stdout.split()
    assert Path(where[0]) == site / "apiwrap" / "adapters" / "__init__.py"
    assert where[1] == "stub-namesakes"

    settings = ["--vendor", "local", "--denoiser", "none", "--sigma", "0.12", "--n0", "5", "--n", "30"]
    job = ["--job", "layout", "--runs-dir", str(tmp_path / "runs")]
    certified = _run([str(venv / "bin" / "apiwrap"), "certify", str(SAMPLE), *settings, *job], tmp_path)
    assert f"{SAMPLE.name}: flamingo radius" in certified.stdout
    assert (tmp_path / "runs" / "layout.sqlite").is_file()


def _loaded_heavy_modules(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint('LOADED', *sorted(m for m in {HEAVY!r} if m in sys.modules))"
    outcome = _run([sys.executable, "-c", probe], ROOT)
    assert outcome.stdout.splitlines()[-1].startswith("LOADED"), outcome.stdout
    return outcome.stdout.splitlines()[-1].split()[1:]


def test_the_statistics_package_loads_no_torch_pil_or_sqlite() -> None:
    modules = sorted(p.stem for p in (ROOT / "apiwrap" / "statistics").glob("*.py") if p.stem != "__init__")
    assert "procedures" in modules
    imports = "\n".join(f"import apiwrap.statistics.{module}" for module in modules)
    assert _loaded_heavy_modules(imports) == []


def test_import_apiwrap_is_light_and_every_public_name_resolves() -> None:
    assert _loaded_heavy_modules("import apiwrap") == []
    import apiwrap

    missing = [name for name in apiwrap.__all__ if getattr(apiwrap, name, None) is None]
    assert missing == []
    assert issubclass(apiwrap.VendorError, apiwrap.ApiwrapError)
    assert issubclass(apiwrap.BudgetError, apiwrap.ApiwrapError)


@pytest.mark.parametrize("argv", [["--help"], ["replay", "--help"]])
def test_the_command_line_help_loads_no_torch_pil_or_sqlite(argv: list[str]) -> None:
    run_cli = textwrap.dedent(
        f"""
        import contextlib
        from apiwrap.cli import app
        with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):
            app({argv!r}, prog_name="apiwrap")
        """
    )
    assert _loaded_heavy_modules(run_cli) == []
    # and the help was really printed: the probe is not vacuous
    helped = _run([sys.executable, "-c", run_cli.replace(", contextlib.redirect_stdout(None)", "")], ROOT)
    assert "Usage: apiwrap" in helped.stdout


def _bad_settings() -> None:
    CertificationSettings(vendor="local", sigma=-1.0)


def _unknown_vendor() -> None:
    create_adapter("no-such-vendor")


def _unknown_denoiser() -> None:
    load_denoiser("no-such-denoiser", 0.25)


def _missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from apiwrap import adapters

    monkeypatch.setitem(adapters._REGISTRY, "ghost", ("apiwrap_no_such_sdk:create", "ghost"))
    create_adapter("ghost")


def _image_error() -> None:
    load_image(b"these bytes are no image", name="junk")


def _journal_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "job.sqlite")
    try:
        journal.bind_parameters({"sigma": 0.25})
        journal.bind_parameters({"sigma": 0.5})
    finally:
        journal.close()


def _budget_exceeded() -> None:
    Budget(max_usd=Decimal("0.001")).reserve(cost_micro_usd=2_000)


def _job_aborted(tmp_path: Path) -> None:
    import asyncio

    async def query_with_revoked_credentials() -> None:
        journal = Journal(tmp_path / "aborted.sqlite")
        adapter = ScriptedAdapter([AuthError("credentials revoked")])
        scheduler = QueryScheduler(adapter, journal, Budget(), price=Price(Decimal("1.00")))
        try:
            await scheduler.query(journal.image_id("x"), 0, solid_png(), "digest")
        finally:
            await scheduler.aclose()
            journal.close()

    asyncio.run(query_with_revoked_credentials())


def _vendor_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_COMPUTER_VISION_ENDPOINT", "VISION_ENDPOINT", "COMPUTER_VISION_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    create_adapter("azure")


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        (_bad_settings, ConfigurationError),
        (_unknown_vendor, ConfigurationError),
        (_unknown_denoiser, ConfigurationError),
        (_missing_extra, MissingExtra),
        (_image_error, ImageError),
        (_journal_error, JournalError),
        (_budget_exceeded, BudgetExceeded),
        (_job_aborted, JobAborted),
        (_vendor_error, VendorError),
    ],
    ids=lambda value: getattr(value, "__name__", "").strip("_"),
)
def test_except_apiwrap_error_catches_every_kind_the_cli_reports(
    cause: Callable[..., None], kind: type[ApiwrapError], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = {"tmp_path": tmp_path, "monkeypatch": monkeypatch}
    arguments = {name: wanted[name] for name in cause.__code__.co_varnames[: cause.__code__.co_argcount]}
    try:
        cause(**arguments)
    except ApiwrapError as error:
        assert isinstance(error, kind), repr(error)
        assert str(error)
    else:
        pytest.fail(f"{cause.__name__} raised nothing")
