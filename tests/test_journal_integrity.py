"""A journal cannot silently restart or lie: damaged, foreign or edited journals are refused."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from apiwrap.cli import app
from apiwrap.engine.journal import Journal, check_journal
from apiwrap.errors import JournalError
from apiwrap.statistics.procedures import CertificationSettings
from tests.fakes import FaultyVendor
from tests.test_engine import _images, _run, _spec

SAMPLE = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.png"))[0]
runner = CliRunner()


def _said(result: Result) -> str:
    """What a command printed, lines joined (Rich wraps long messages)."""
    return " ".join(result.output.split())


#: 3 images want 3 * (1 + 20) queries; the cap stops the job well before.
CAP = 30
SETTINGS = CertificationSettings(vendor="fake", sigma=0.25, n0=2, n=20, alpha=0.05, seed=1)


def _capped_job(runs: Path, job: str = "job") -> Path:
    """A job that spent its whole cap: a resume with the same cap has nothing left to buy."""
    report = _run(_spec(runs, job, settings=SETTINGS, max_queries=CAP), FaultyVendor(), _images(3))
    assert report.budget_exhausted and report.budget.spent.queries == CAP
    return report.journal


def _schema_one_journal(path: Path) -> None:
    """The tables apiwrap wrote before rows were sealed (no application id, no seals)."""
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE job (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE queries (image_id INTEGER, sample_index INTEGER, label TEXT);"
            "CREATE TABLE attempts (attempt_id INTEGER PRIMARY KEY, cost_micro_usd INTEGER);"
        )
    db.close()


def _foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()


def _truncated_journal(path: Path) -> None:
    journal = _capped_job(path.parents[1] / "source", path.stem)
    data = journal.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: path.write_bytes(b""), "the file is empty (0 bytes)"),
        (lambda path: path.write_text("results, not a journal\n"), "it is not a SQLite database"),
        (_truncated_journal, "SQLite finds the file damaged"),
        (_foreign_database, "it is a SQLite database but not an apiwrap journal"),
        (_schema_one_journal, "it is a journal of apiwrap's schema 1"),
    ],
    ids=["empty", "overwritten", "truncated", "foreign", "schema-1"],
)
def test_a_journal_that_is_no_intact_apiwrap_journal_is_refused_and_nothing_is_touched(
    tmp_path: Path, make: object, problem: str
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = runs / "named.sqlite"
    make(journal)  # type: ignore[operator]
    before = {path.name: path.read_bytes() for path in runs.iterdir()}
    previous = tmp_path / "previous.jsonl"
    previous.write_text('{"image": "from the last run"}\n')
    args = ["certify", str(SAMPLE), "--vendor", "local", "--denoiser", "none", "--n", "2"]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs), "--job", "named", "--out", str(previous)])
    assert result.exit_code == 2, result.output
    assert f"journal {journal} cannot be used: {problem}" in _said(result)
    assert "Traceback" not in _said(result)
    assert {path.name: path.read_bytes() for path in runs.iterdir()} == before  # no new journal, no -wal
    assert previous.read_text() == '{"image": "from the last run"}\n'
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "source") == [
        "previous.jsonl",
        "runs",
    ]


def test_a_new_journal_is_created_whole_and_private(tmp_path: Path) -> None:
    journal = _capped_job(tmp_path / "runs")
    assert check_journal(journal).ok
    assert journal.stat().st_mode & 0o777 == 0o600  # it holds raw vendor answers
    assert (tmp_path / "runs").stat().st_mode & 0o777 == 0o700
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["job.sqlite"]


def _edit(journal: Path, sql: str) -> None:
    with sqlite3.connect(journal) as db:
        db.execute(sql)
    db.close()


def test_an_edited_vote_is_found_by_verify_and_refused_by_resume_replay_and_report(tmp_path: Path) -> None:
    journal = _capped_job(tmp_path)
    intact = runner.invoke(app, ["verify", "job", "--runs-dir", str(tmp_path)])
    assert intact.exit_code == 0, intact.output
    assert "intact (schema 2): 3 image(s), 30 vote(s) sealed and chained, 30 attempt(s)" in _said(intact)

    # SQLite's own check still passes: only the seals can tell.
    _edit(journal, "UPDATE queries SET label = 'cas' WHERE seq = 7 AND label = 'cat'")
    _edit(journal, "UPDATE queries SET label = 'dof' WHERE seq = 7 AND label = 'dog'")
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ((image, index),) = db.execute(
            "SELECT name, sample_index FROM queries JOIN images USING (image_id) WHERE seq = 7"
        )
    db.close()
    checked = runner.invoke(app, ["verify", "job", "--runs-dir", str(tmp_path)])
    assert checked.exit_code == 1
    assert f"the votes' chain breaks at the vote of {image}, sample {index} (vote #7)" in _said(checked)

    replayed = runner.invoke(app, ["replay", "job", "--runs-dir", str(tmp_path)])
    assert replayed.exit_code == 2 and "cannot be used: the votes' chain breaks" in _said(replayed)
    report = tmp_path / "report.csv"
    refused = runner.invoke(app, ["report", "job", "--runs-dir", str(tmp_path), "--csv", str(report)])
    assert refused.exit_code == 2 and "cannot be used: the votes' chain breaks" in _said(refused)
    assert not report.exists()
    vendor = FaultyVendor()
    with pytest.raises(JournalError, match="the votes' chain breaks"):
        _run(_spec(tmp_path, settings=SETTINGS, max_queries=CAP + 10), vendor, _images(3))
    assert vendor.calls == 0


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("DELETE FROM queries WHERE seq = 12", "the votes' chain breaks at the vote of"),
        (
            "DELETE FROM queries WHERE seq = (SELECT MAX(seq) FROM queries)",
            "answered attempt(s) have no vote",
        ),
        ("DELETE FROM attempts WHERE attempt_id = (SELECT MAX(attempt_id) FROM attempts)", "cost other than"),
        (
            "UPDATE attempts SET billed = 0, cost_micro_usd = 0 WHERE attempt_id = 3",
            "attempts row 3 does not",
        ),
        ("UPDATE job SET value = replace(value, '\"n\": 20', '\"n\": 10')", "job row 'parameters' does not"),
        ("UPDATE images SET status = 'pending' WHERE image_id = 1", "images row 1 does not match"),
        ("UPDATE queries SET label = CAST(label AS BLOB) WHERE seq = 5", "chain breaks at the vote of"),
        ("ALTER TABLE replays DROP COLUMN seal", "its table replays has the columns"),
    ],
    ids=[
        "vote-deleted",
        "last-vote-deleted",
        "attempt-deleted",
        "billing-edited",
        "parameters",
        "image",
        "blob",
        "column-dropped",
    ],
)
def test_deleted_or_edited_rows_are_found(tmp_path: Path, sql: str, problem: str) -> None:
    journal = _capped_job(tmp_path)
    _edit(journal, sql)
    check = check_journal(journal)
    assert any(problem in found for found in check.problems), check.problems


def test_a_journal_of_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    journal = _capped_job(tmp_path)
    _edit(journal, "PRAGMA user_version = 3")
    with pytest.raises(
        JournalError, match="it has schema 3, from a newer apiwrap; this apiwrap reads schema 2"
    ):
        Journal(journal)


def _votes(journal: Path) -> dict[tuple[str, int], tuple[str, str]]:
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT name, sample_index, label, raw FROM queries JOIN images USING (image_id)")
        votes = {(name, index): (label, raw) for name, index, label, raw in rows}
    db.close()
    return votes


def _damaged(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "flips"])
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    damaged = bytearray(data)
    for _ in range(1 if kind == "flip" else rng.randint(2, 16)):
        damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def test_fuzzed_journal_damage_never_spends_past_the_cap_nor_counts_a_changed_vote(tmp_path: Path) -> None:
    journal = _capped_job(tmp_path / "source")
    original, votes = journal.read_bytes(), _votes(journal)
    clean = _run(_spec(tmp_path / "source", settings=SETTINGS, max_queries=CAP), FaultyVendor(), _images(3))
    rng = random.Random(23)
    refused = accepted = 0
    for case in range(80):
        runs = tmp_path / f"case{case}"
        runs.mkdir()
        (runs / "job.sqlite").write_bytes(b"" if case == 0 else _damaged(original, rng))
        vendor = FaultyVendor()
        try:
            report = _run(_spec(runs, settings=SETTINGS, max_queries=CAP), vendor, _images(3))
        except JournalError:
            refused += 1
            assert vendor.calls == 0
            continue
        accepted += 1
        # the cap was spent before the damage: a resume that believes it may buy more is lying
        assert sum(vendor.billed.values()) == 0, f"case {case}: bought past the cap"
        assert _votes(runs / "job.sqlite") == votes, f"case {case}: a vote changed"
        assert [(r.image, r.status, r.label, r.queries) for r in report.results] == [
            (r.image, r.status, r.label, r.queries) for r in clean.results
        ]
    assert refused > 0 and accepted > 0 and accepted + refused == 80


def test_verify_exits_2_without_a_journal_and_1_for_an_empty_one(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["verify", "nothing", "--runs-dir", str(tmp_path)])
    assert missing.exit_code == 2 and f"no journal at {tmp_path / 'nothing.sqlite'}" in _said(missing)
    assert runner.invoke(app, ["verify", "../escape", "--runs-dir", str(tmp_path)]).exit_code == 2
    (tmp_path / "empty.sqlite").write_bytes(b"")
    empty = runner.invoke(app, ["verify", str(tmp_path / "empty.sqlite")])
    assert empty.exit_code == 1 and "NOT INTACT - the file is empty (0 bytes)" in _said(empty)
    assert (tmp_path / "empty.sqlite").read_bytes() == b""
