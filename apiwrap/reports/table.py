"""The CSV report: one row per image, every value needed to audit a certificate.

Each row starts with the job's name and the settings that produced it
(:data:`~apiwrap.statistics.settings.ROW_FIELDS`), so a row read alone says where it came from.

Floats are written with ``repr`` (shortest exact round trip), a missing value as an empty
cell, model versions joined by ``;``, so :func:`read_csv` gives back the results' values.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

from apiwrap.budgets import from_micro_usd
from apiwrap.reports._job import ImageRecord, JobRecord
from apiwrap.statistics.settings import ROW_FIELDS

__all__ = ["CSV_COLUMNS", "read_csv", "write_csv"]

#: Column names; where a column mirrors an ImageResult field the name differs only for
#: ``clean_label`` (``reference_label``); ``spend_usd`` and the part of it that timed out,
#: ``possibly_billed_usd``, are no result fields.
CSV_COLUMNS = (
    "job",
    *ROW_FIELDS,
    "image",
    "digest",
    "clean_label",
    "status",
    "label",
    "radius",
    "p_lower",
    "candidate",
    "votes_for_candidate",
    "estimation_votes",
    "queries",
    "failed_queries",
    "spend_usd",
    "possibly_billed_usd",
    "model_versions",
    "abstain_reason",
    "error",
)
_FLOATS = {"sigma", "alpha", "radius", "p_lower"}
_INTEGERS = {"n0", "n", "votes_for_candidate", "estimation_votes", "queries", "failed_queries"}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _row(job: JobRecord, image: ImageRecord) -> dict[str, str]:
    result = image.result
    values: dict[str, Any] = {
        "job": job.name,
        **job.settings.row(),
        "image": image.name,
        "digest": image.digest,
        "status": image.status,
        "spend_usd": from_micro_usd(image.billed_micro_usd),
        "possibly_billed_usd": from_micro_usd(image.possibly_billed_micro_usd),
        "error": image.error,
    }
    if result is not None:
        values |= {
            "clean_label": result.reference_label,
            "label": result.label,
            "radius": result.radius,
            "p_lower": result.p_lower,
            "candidate": result.candidate,
            "votes_for_candidate": result.votes_for_candidate,
            "estimation_votes": result.estimation_votes,
            "queries": result.queries,
            "failed_queries": result.failed_queries,
            "model_versions": ";".join(result.model_versions),
            "abstain_reason": result.abstain_reason,
            "error": result.error,
        }
    return {column: _cell(values.get(column)) for column in CSV_COLUMNS}


def write_csv(job: JobRecord, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(_row(job, image) for image in job.images)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a report CSV with their types back: None for an empty cell, numbers, Decimal dollars."""
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for column, text in raw.items():
                if column == "model_versions":
                    row[column] = text.split(";") if text else []
                elif text == "":
                    row[column] = None
                elif column in _FLOATS:
                    row[column] = float(text)
                elif column in _INTEGERS:
                    row[column] = int(text)
                elif column in {"spend_usd", "possibly_billed_usd"}:
                    row[column] = Decimal(text)
                else:
                    row[column] = text
            rows.append(row)
    return rows
