"""The HTML report: one self-contained page a person can open offline.

Every picture is inlined as a data URI and the page's Content-Security-Policy forbids any
other source, so opening it makes no network request. Every piece of text from the journal
(labels, names, errors) is escaped.
"""

from __future__ import annotations

import base64
import datetime
import math
import re
from collections import Counter
from collections.abc import Mapping
from html import escape
from pathlib import Path

from apiwrap.budgets import format_usd
from apiwrap.engine.journal import JournalRun
from apiwrap.errors import ConfigurationError
from apiwrap.reports._job import ImageRecord, JobRecord
from apiwrap.reports.curve import curve_png
from apiwrap.reports.evidence import Evidence, gather_evidence
from apiwrap.statistics.procedures import ImageResult
from apiwrap.statistics.radii import report_radii
from apiwrap.statistics.summary import certified_accuracy

__all__ = ["render_html", "rms_per_value", "write_html"]

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1d1d1f; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; } td, th { padding: 4px 8px; vertical-align: top; text-align: left; }
.kv td:first-child { color: #555; } .grid th { border-bottom: 2px solid #ccc; }
.grid td { border-bottom: 1px solid #e3e3e3; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.certified { color: #0a7a2f; font-weight: 600; } .abstained { color: #a05a00; font-weight: 600; }
.failed, .budget, .pending { color: #b00020; font-weight: 600; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 8px 0; }
.meaning { background: #eef4ff; border-left: 4px solid #3d6fd8; padding: 8px 12px; max-width: 950px; }
.bar { display: flex; align-items: center; gap: 6px; font-size: 12px; white-space: nowrap; }
.bar .track { width: 120px; height: 10px; background: #eee; }
.bar .fill { height: 10px; background: #3d6fd8; } .bar .fill.top { background: #0a7a2f; }
.copies { display: flex; gap: 6px; } .copies figure { margin: 0; font-size: 11px; width: 112px; }
img.thumb, .copies img { width: 112px; height: auto; image-rendering: auto; border: 1px solid #ddd; }
.mismatch { color: #b00020; } small { color: #666; }
.columns { display: grid; grid-template-columns: minmax(280px, 420px) minmax(400px, 1fr); gap: 32px; }
.kv td:last-child { word-break: break-all; }
.curve { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
"""
# No source but data: URIs and the inline style: opening the file cannot reach the network.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_SPACE = re.compile(r"^(\d+)x(\d+) pixels")


def rms_per_value(radius: float, width: int, height: int) -> float:
    """The root-mean-square change per value, in 8-bit levels, of an L2 change of ``radius``.

    Values are in [0, 1] over width * height * 3 of them; one 8-bit level is 1/255.
    """
    return radius / math.sqrt(width * height * 3) * 255


def _dimensions(image: ImageRecord) -> tuple[int, int] | None:
    space = image.result.certified_space if image.result else None
    match = _SPACE.match(space or "")
    return (int(match[1]), int(match[2])) if match else None


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _settings(job: JobRecord) -> str:
    rows = "".join(
        f"<tr><td>{escape(key)}</td><td>{escape(str(value))}</td></tr>"
        for key, value in sorted(job.parameters.items())
    )
    return f'<table class="kv">{rows}</table>'


def _spend(job: JobRecord) -> str:
    rows = [
        ("spent", f"{format_usd(job.spent_micro_usd)} for {job.billed_queries} billable queries"),
        (
            "possibly billed",
            f"{job.possibly_billed_queries} queries timed out, {format_usd(job.possibly_billed_micro_usd)} "
            "(counted in the spend and against the caps; the vendor may not have charged them)",
        ),
        ("attempt outcomes", ", ".join(f"{k}: {v}" for k, v in sorted(job.outcomes.items())) or "none"),
    ]
    if job.activity is not None:
        first, last = job.activity
        rows.append(
            ("vendor activity", f"{_utc(first)} to {_utc(last)} ({last - first:.1f} s, every run of the job)")
        )
    for number, run in enumerate(job.runs, start=1):
        rows.append(
            (f"run {number}", f"{_utc(run.started_at)}: apiwrap {run.apiwrap_version}; " + _prepared_by(run))
        )
    statuses = Counter(image.status for image in job.images)
    rows.append(("images", ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _prepared_by(run: JournalRun) -> str:
    """Which denoisers prepared a run's samples, e.g. "ffdnet in onnxruntime 1.32.0 on cpu, float32"."""
    described = [
        "no denoiser"
        if record["runtime"] == "none"
        else f"{record['name']} in {record['runtime']} {record['runtime_version']} on {record['device']}, "
        f"{record['precision']}"
        for record in run.denoisers
    ]
    return "; ".join(described)


def _meaning(job: JobRecord) -> str:
    alpha = job.settings.alpha
    smoothed = (
        f"The smoothed vendor is the vendor's top-1 label on copies of the image with Gaussian noise "
        f"(sigma = {job.settings.sigma:g}) added and then removed by the denoiser "
        f"({escape(job.settings.denoiser)}); it can differ from the vendor's label on the clean image, "
        "which is shown for comparison."
    )
    if job.settings.mode == "predict":
        return (
            f'<div class="meaning"><p>Each predicted label is, with probability at least 1 - alpha = '
            f"{1 - alpha:.4g}, the smoothed vendor's label, or the image abstains. Predictions carry no "
            f"radius. {smoothed}</p></div>"
        )
    dims = {d for image in job.images if (d := _dimensions(image)) is not None}
    width, height = next(iter(dims)) if len(dims) == 1 else (224, 224)
    values = width * height * 3
    example = 0.25
    where = "here" if len(dims) == 1 else "for a 224x224 image (this job's images differ in size)"
    return f"""<div class="meaning">
<p><b>What a radius means.</b> A certified label with L2 radius r cannot be changed by any change
to the image whose L2 norm is below r, counted over all its values in [0, 1] ({where}: {width} x
{height} x 3 = {values:,} values). Spread evenly over every value, that is a root-mean-square change
of r / sqrt({values:,}) = r / {math.sqrt(values):.0f} per value: for r = {example} it is
{example / math.sqrt(values):.5f}, or {rms_per_value(example, width, height):.2f} of one 8-bit level
({rms_per_value(example, width, height):.2f}/255). Concentrated on one value, the same r = {example} allows
a change of up to {example} ({example * 255:.0f}/255) in that value alone.</p>
<p><b>How sure it is.</b> Each certificate holds with probability at least 1 - alpha = {1 - alpha:.4g}
over the noise drawn for it: the procedure either abstains or returns the smoothed vendor's label with a
radius that is correct. alpha is per image: over this job's {len(job.images)} images, the expected
number of wrong certificates is at most {len(job.images)} x {alpha:g} = {len(job.images) * alpha:.3g}.
{smoothed}</p></div>"""


def _curve(job: JobRecord) -> str:
    if job.settings.mode != "certify":
        return ""
    try:
        png = curve_png([job])
    except ConfigurationError as exc:
        return f'<h2>Certified accuracy</h2><p class="note">No curve: {escape(str(exc))}</p>'
    rows = certified_accuracy(job.results, report_radii(job.settings.sigma))
    table = "".join(
        f'<tr><td class="num">{row.radius:g}</td><td class="num">{row.certified}/{row.images}</td>'
        f'<td class="num">{row.accuracy:.1%}</td><td class="num">{row.low:.1%} - {row.high:.1%}</td></tr>'
        for row in rows
    )
    data = base64.b64encode(png).decode("ascii")
    return f"""<h2>Certified accuracy</h2>
<p>Share of images certified at radius &gt;= r with the vendor's clean label (failed and unfunded images
are not counted), with an exact 95% binomial interval over the images.</p>
<div class="curve"><img id="curve" alt="certified accuracy against radius" src="data:image/png;base64,{data}">
<table class="grid"><tr><th>radius</th><th>certified</th><th>accuracy</th><th>95% interval</th></tr>
{table}</table></div>"""


def _agreement(result: ImageResult) -> str:
    if result.reference_label is None:
        return ""
    same = result.label == result.reference_label
    return f"<br><small>{'= clean label' if same else 'not the clean label'}</small>"


def _verdict(image: ImageRecord) -> str:
    result = image.result
    if result is None:
        return f'<span class="pending">{escape(image.status)}</span> {escape(image.error or "")}'
    if result.status == "certified":
        dims = _dimensions(image)
        rms = (
            f"<br><small>RMS {rms_per_value(result.radius or 0.0, *dims):.2f}/255 per value</small>"
            if dims
            else ""
        )
        return (
            f'<span class="certified">{escape(result.label or "")}</span>{_agreement(result)}'
            f"<br>radius {result.radius:.3f}<br><small>pA &gt;= {result.p_lower:.3f}</small>{rms}"
        )
    if result.status == "predicted":
        return f'<span class="certified">{escape(result.label or "")}</span>{_agreement(result)}'
    if result.status == "abstained":
        candidate = f"<br><small>candidate {escape(result.candidate)}</small>" if result.candidate else ""
        return f'<span class="abstained">ABSTAIN</span><br>{escape(result.abstain_reason or "")}{candidate}'
    reason = result.error or result.abstain_reason or ""
    kind = "NOT CERTIFIED (budget)" if result.status == "budget" else "FAILED"
    return f'<span class="{result.status}">{kind}</span><br>{escape(reason)}'


def _votes(image: ImageRecord) -> str:
    result = image.result
    if result is None or not result.top_votes:
        return ""
    total = result.estimation_votes or sum(result.top_votes.values())
    bars = []
    for position, (label, count) in enumerate(sorted(result.top_votes.items(), key=lambda kv: -kv[1])):
        share = count / total if total else 0.0
        fill = "fill top" if position == 0 else "fill"
        bars.append(
            f'<div class="bar"><div class="track"><div class="{fill}" style="width:{share:.1%}"></div></div>'
            f"{count} {escape(label)}</div>"
        )
    kind = "estimation" if result.estimation_votes else "selection"
    return "".join(bars) + f"<small>of {total} {kind} votes; {result.queries} queries</small>"


def _copies(evidence: Evidence) -> str:
    figures = []
    for copy in evidence.copies:
        check = "" if copy.matches_sent else '<br><span class="mismatch">differs from the bytes sent</span>'
        figures.append(
            f'<figure><img alt="noisy copy {copy.sample_index}" src="{copy.preview}">'
            f"<figcaption>#{copy.sample_index}: {escape(copy.vendor_label)}{check}</figcaption></figure>"
        )
    return f'<div class="copies">{"".join(figures)}</div>' if figures else ""


def _image_row(image: ImageRecord, evidence: Evidence, shown_name: str) -> str:
    result = image.result
    thumb = f'<img class="thumb" alt="image" src="{evidence.thumbnail}"><br>' if evidence.thumbnail else ""
    notes = "".join(f"<br><small>{escape(note)}</small>" for note in evidence.notes)
    spend = format_usd(image.billed_micro_usd)
    versions = ", ".join(result.model_versions) if result else ""
    return (
        f'<tr class="image-row"><td>{thumb}{escape(shown_name)}<br><small>{escape((image.digest or "")[:16])}'
        f"</small>{notes}</td><td>{escape((result.reference_label if result else None) or '')}</td>"
        f"<td>{_verdict(image)}</td><td>{_votes(image)}</td><td>{_copies(evidence)}</td>"
        f'<td class="num">{spend}<br><small>{escape(versions)}</small></td></tr>'
    )


def render_html(
    job: JobRecord,
    *,
    sources: Mapping[str, Path | bytes] | None = None,
    display_names: Mapping[str, str] | None = None,
    copies: int = 3,
) -> str:
    """The report page of ``job``.

    ``sources`` maps a journal image name to its file or bytes (by default the name as a path);
    ``display_names`` replaces journal names in the table (the service's upload file names).
    """
    if sources is None:
        sources = {image.name: Path(image.name) for image in job.images}
    names = display_names or {}
    evidence, job_notes = gather_evidence(job, sources, copies=copies)
    if not any(item.thumbnail for item in evidence.values()) and job.images:
        job_notes.append("None of the job's source images was found here: the report shows no pictures.")
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in job_notes)
    rows = "".join(
        _image_row(image, evidence[image.image_id], names.get(image.name, image.name)) for image in job.images
    )
    mode = job.settings.mode
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>apiwrap report: {escape(job.name)}</title><style>{_CSS}</style></head>
<body>
<h1>apiwrap {escape(mode)} report: {escape(job.name)}</h1>
<p><small>Built from the journal {escape(job.journal.name)} with no query to the vendor.</small></p>
{notes}
<div class="columns"><div><h2>Settings</h2>{_settings(job)}</div>
<div><h2>Spend and time</h2>{_spend(job)}{_meaning(job)}</div></div>
{_curve(job)}
<h2>Images</h2>
<p>Noisy copies: the first estimation samples sent, rebuilt from the seed and the denoiser, with the
vendor's label for each; previews are JPEG, the bytes sent were PNG (their sha256 matched the
journal's unless marked).</p>
<table class="grid" id="images"><tr><th>image</th><th>vendor's clean label</th><th>result</th>
<th>top labels</th><th>noisy copies sent (denoised)</th><th>spend, model</th></tr>
{rows}</table>
</body></html>
"""


def write_html(
    job: JobRecord,
    path: Path,
    *,
    sources: Mapping[str, Path | bytes] | None = None,
    display_names: Mapping[str, str] | None = None,
) -> None:
    path.write_text(render_html(job, sources=sources, display_names=display_names), encoding="utf-8")
