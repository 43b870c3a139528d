"""The HTML report: one self-contained page a person can open offline.

Every picture is inlined as a data URI and the page's Content-Security-Policy forbids any
other source, so opening it makes no network request. Every piece of text from the journal
(labels, names, errors) is escaped.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import math
import re
import statistics
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
.headline { background: #f3f8f1; border-left: 4px solid #0a7a2f; padding: 10px 14px; max-width: 950px; }
.headline .big { font-size: 20px; font-weight: 600; margin: 0 0 4px; }
.headline ul { margin: 4px 0; padding-left: 20px; }
.headline ul.radii { padding-left: 0; } .headline ul.radii li { display: inline; margin-right: 18px; }
details { margin-top: 20px; } summary { cursor: pointer; font-weight: 600; }
th[data-type] { cursor: pointer; user-select: none; }
th[data-type]::after { content: " \\2195"; color: #999; }
th[aria-sort="ascending"]::after { content: " \\2191"; }
th[aria-sort="descending"]::after { content: " \\2193"; }
#filter { margin: 6px 0 10px; padding: 4px 8px; width: 320px; }
"""
# Sorting and filtering the images table: click a header (again to reverse), or open the page
# at #sort=KEY or #sort=KEY-desc (KEY is a header's data-key); the filter hides rows without its text.
_SCRIPT = """(function () {
  var table = document.getElementById("images");
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(column, descending) {
    var numeric = heads[column].dataset.type === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (head, i) {
      head.setAttribute("aria-sort", i === column ? (descending ? "descending" : "ascending") : "none");
    });
  }
  heads.forEach(function (head, i) {
    if (!head.dataset.type) { return; }
    head.addEventListener("click", function () {
      sortBy(i, head.getAttribute("aria-sort") === "ascending");
    });
  });
  var filter = document.getElementById("filter");
  filter.addEventListener("input", function () {
    var wanted = filter.value.toLowerCase();
    Array.prototype.forEach.call(body.rows, function (row) {
      row.hidden = wanted !== "" && row.textContent.toLowerCase().indexOf(wanted) < 0;
    });
  });
  var asked = /^#sort=([a-z_]+?)(-desc)?$/.exec(window.location.hash);
  if (asked) {
    var column = heads.findIndex(function (head) { return head.dataset.key === asked[1]; });
    if (column >= 0) { sortBy(column, Boolean(asked[2])); }
  }
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
# No source but data: URIs, the inline style and the one script named by its hash: opening the
# file cannot reach the network, and no other script (say, in a label) can run.
_CSP = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'"
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
    return (
        f'<details id="settings"><summary>Settings bound in the journal ({len(job.parameters)})</summary>'
        f'<table class="kv">{rows}</table></details>'
    )


def _headline(job: JobRecord) -> str:
    """The first thing a reader sees: what was certified, how far, and what each certificate cost."""
    results = job.results
    total = len(job.images)
    spent = format_usd(job.spent_micro_usd)
    granted = [r for r in results if r.status in {"certified", "predicted"}]
    unit = "certificate" if job.settings.mode == "certify" else "prediction"
    # To a tenth of a cent (finer where that is zero): a figure to compare, not to bill.
    each = job.spent_micro_usd / len(granted) if granted else 0.0
    rounded = round(each, -3) or round(each)
    per = f"{format_usd(int(rounded))} per {unit}" if granted else f"no {unit}"
    lines = []
    if job.settings.mode == "certify":
        for row in certified_accuracy(results, report_radii(job.settings.sigma)):
            lines.append(f"<li>at radius {row.radius:g}: {row.certified} of {total}</li>")
        radii = [r.radius for r in granted if r.radius is not None]
        median = f"median certified radius {statistics.median(radii):.3f}" if radii else "no certified radius"
        at_zero = sum(1 for r in granted if r.label == r.reference_label)
        big = f"{at_zero} of {total} images certified with the vendor's clean label"
    else:
        median = ""
        big = f"{len(granted)} of {total} images predicted"
    facts = " &middot; ".join(
        part for part in (median, per, f"{spent} spent for {job.billed_queries} billable queries") if part
    )
    radii_list = f'<ul class="radii">{"".join(lines)}</ul>' if lines else ""
    return (
        f'<section class="headline" id="headline"><p class="big">{big}</p>{radii_list}'
        f"<p>{facts}</p>{_outcomes(job)}</section>"
    )


def _outcomes(job: JobRecord) -> str:
    """How the images ended, abstentions counted by reason."""
    reasons: Counter[str] = Counter()
    for image in job.images:
        result = image.result
        if result is None:
            reasons["not finished (pending)"] += 1
        elif result.status == "abstained":
            reasons[f"abstained: {result.abstain_reason}"] += 1
        elif result.status == "budget":
            reasons["not certified: the budget ran out"] += 1
        elif result.status == "failed":
            reasons["failed"] += 1
    if not reasons:
        return ""
    items = "".join(
        f"<li>{count} {escape(reason)}</li>"
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])
    )
    return f'<ul id="outcomes">{items}</ul>'


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
<p>Share of images certified at radius &gt;= r with the vendor's clean label (a failed or unfunded image
counts as not certified), with an exact 95% binomial interval over the images.</p>
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


def _image_row(image: ImageRecord, evidence: Evidence, shown_name: str, one_folder: bool) -> str:
    result = image.result
    thumb = f'<img class="thumb" alt="image" src="{evidence.thumbnail}"><br>' if evidence.thumbnail else ""
    notes = "".join(f"<br><small>{escape(note)}</small>" for note in evidence.notes)
    spend = format_usd(image.billed_micro_usd)
    versions = ", ".join(result.model_versions) if result else ""
    clean = (result.reference_label if result else None) or ""
    # Sort keys: certified radius (-1 for none), share of the top label's votes, spend in micro-USD.
    radius = result.radius if result is not None and result.radius is not None else -1.0
    top = max(result.top_votes.values(), default=0) if result is not None else 0
    counted = (result.estimation_votes or sum(result.top_votes.values())) if result is not None else 0
    share = top / counted if counted else 0.0
    # The folder is said once above the table when every image shares it; otherwise in each row.
    folder = str(Path(shown_name).parent)
    path = f"<br><small>{escape(folder)}</small>" if not one_folder and folder != "." else ""
    return (
        f'<tr class="image-row"><td data-sort="{escape(shown_name)}">{thumb}{escape(Path(shown_name).name)}'
        f"{path}<br><small>{escape((image.digest or '')[:16])}</small>{notes}</td>"
        f'<td data-sort="{escape(clean)}">{escape(clean)}</td>'
        f'<td data-sort="{radius!r}">{_verdict(image)}</td><td data-sort="{share!r}">{_votes(image)}</td>'
        f"<td>{_copies(evidence)}</td>"
        f'<td class="num" data-sort="{image.billed_micro_usd}">{spend}'
        f"<br><small>{escape(versions)}</small></td></tr>"
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
    ``display_names`` replaces journal names in the table (the service's upload file names);
    ``copies`` noisy copies are shown per image (0: none, and no denoiser is loaded).
    """
    if sources is None:
        sources = {image.name: Path(image.name) for image in job.images}
    names = display_names or {}
    evidence, job_notes = gather_evidence(job, sources, copies=copies)
    if not any(item.thumbnail for item in evidence.values()) and job.images:
        job_notes.append("None of the job's source images was found here: the report shows no pictures.")
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in job_notes)
    shown = {image.name: names.get(image.name, image.name) for image in job.images}
    folders = {str(Path(name).parent) for name in shown.values()}
    one_folder = len(folders) == 1
    where = f" Images from {escape(next(iter(folders)))}." if one_folder and folders != {"."} else ""
    rows = "".join(
        _image_row(image, evidence[image.image_id], shown[image.name], one_folder) for image in job.images
    )
    mode = job.settings.mode
    copies_shown = "the first estimation samples sent" if copies else "not shown (--no-samples)"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>apiwrap report: {escape(job.name)}</title><style>{_CSS}</style></head>
<body>
<h1>apiwrap {escape(mode)} report: {escape(job.name)}</h1>
<p><small>Built from the journal {escape(job.journal.name)} with no query to the vendor.</small></p>
{_headline(job)}
{notes}
<div class="columns"><div><h2>Spend and time</h2>{_spend(job)}</div><div>{_meaning(job)}</div></div>
{_curve(job)}
<h2>Images</h2>
<p>Noisy copies: {copies_shown}, rebuilt from the seed and the denoiser, with the
vendor's label for each; previews are JPEG, the bytes sent were PNG (their sha256 matched the
journal's unless marked). Click a column's header to sort by it.{where}</p>
<input id="filter" type="search" placeholder="Filter rows (label, name, reason...)" aria-label="filter rows">
<table class="grid" id="images"><thead><tr><th data-key="image" data-type="text">image</th>
<th data-key="clean" data-type="text">vendor's clean label</th>
<th data-key="radius" data-type="number">result</th>
<th data-key="votes" data-type="number">top labels</th><th>noisy copies sent (denoised)</th>
<th data-key="spend" data-type="number">spend, model</th></tr></thead>
<tbody>{rows}</tbody></table>
{_settings(job)}
<script>{_SCRIPT}</script>
</body></html>
"""


def write_html(
    job: JobRecord,
    path: Path,
    *,
    sources: Mapping[str, Path | bytes] | None = None,
    display_names: Mapping[str, str] | None = None,
    copies: int = 3,
) -> None:
    """Write the page of ``job``; ``copies=0`` leaves the noisy copies out (about 86 KB an image)."""
    page = render_html(job, sources=sources, display_names=display_names, copies=copies)
    path.write_text(page, encoding="utf-8")
