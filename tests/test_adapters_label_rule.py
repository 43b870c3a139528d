"""From an answer to a vote: the top-1 tie-break by specificity, and the journal binding its rule."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import apiwrap
from apiwrap import JournalError
from apiwrap.adapters.base import LABEL_RULE_VERSION, Label, top1
from apiwrap.budgets import Price, PriceTable
from apiwrap.testing import ScriptedAdapter, solid_png

PRICES = PriceTable({"scripted": Price(Decimal("2.00"))})
#: The rule journals were written by before ties went to the most specific label.
ALPHABETICAL_RULE = "nfkc-casefold-ws-1"


def test_a_tie_goes_to_a_label_no_other_tied_label_subsumes() -> None:
    vehicle = Label("vehicle", 0.99, frozenset({"transportation"}))
    labels = [Label("transportation", 0.99), vehicle, Label("wheel", 0.5)]
    assert top1(labels) == "vehicle"  # alphabetical order alone would answer its parent


def test_an_alias_is_no_more_specific_than_the_label_it_aliases() -> None:
    labels = [Label("automobile", 0.99), Label("car", 0.99, frozenset({"automobile"}))]
    assert top1(labels) == "car"


def test_labels_that_subsume_each_other_fall_back_to_alphabetical_order() -> None:
    labels = [Label("sofa", 0.9, frozenset({"couch"})), Label("couch", 0.9, frozenset({"sofa"}))]
    assert top1(labels) == "couch"


def test_what_a_label_subsumes_decides_only_among_tied_labels() -> None:
    labels = [Label("animal", 0.9), Label("cat", 0.8, frozenset({"animal"}))]
    assert top1(labels) == "animal"


def _certify(tmp_path: Path, adapter: ScriptedAdapter) -> apiwrap.JobResult:
    return apiwrap.certify(
        solid_png(), vendor=adapter, prices=PRICES, runs_dir=tmp_path, job="ruled", n0=3, n=12
    )


def test_a_journal_of_another_label_rule_is_refused_on_resume(tmp_path: Path, monkeypatch) -> None:
    with monkeypatch.context() as older:
        older.setattr("apiwrap.engine.jobs.LABEL_RULE_VERSION", ALPHABETICAL_RULE)
        _certify(tmp_path, ScriptedAdapter([], then="cat"))
    resumed = ScriptedAdapter([], then="cat")
    with pytest.raises(JournalError, match="label rule") as caught:
        _certify(tmp_path, resumed)
    assert ALPHABETICAL_RULE in str(caught.value) and LABEL_RULE_VERSION in str(caught.value)
    assert "new --job" in str(caught.value) and resumed.calls == []
