"""The service's job report (``GET /v1/jobs/{id}/report``): the CLI's HTML page for a finished job.

The page is built from the job's journal, with the uploaded images from the service's store
(thumbnails, noisy copies) and the client's file names in place of the journal's
``image-NNNNN`` names. Only the tenant that owns the job gets it; another tenant's job answers
404, exactly like a job that does not exist.
"""

from __future__ import annotations

import asyncio

from apiwrap.engine.jobs import journal_path
from apiwrap.errors import JournalError
from apiwrap.reports import load_job, render_html
from apiwrap.service._config import ServiceConfig
from apiwrap.service._errors import Conflict
from apiwrap.service._jobs import JobManager, _image_name
from apiwrap.service._store import Store

__all__ = ["job_report_page"]


async def job_report_page(manager: JobManager, config: ServiceConfig, tenant: str, job_id: str) -> str:
    """The HTML report of ``tenant``'s finished job ``job_id``; NotFound (404) or Conflict (409) else."""
    view = await manager.view(tenant, job_id)  # NotFound unless the tenant owns the job
    if view.status == "running":
        raise Conflict(f"job {job_id} is running; its report is ready when it ends")
    return await asyncio.to_thread(_render, config, job_id)


def _render(config: ServiceConfig, job_id: str) -> str:
    path = journal_path(config.runs_dir, job_id)
    if not path.exists():
        raise Conflict(f"job {job_id} ended before any image was read: it has no report")
    # A connection of its own: the report runs in a worker thread while the server uses its store.
    store = Store(config.store_path)
    try:
        uploads = store.images(job_id)
    finally:
        store.close()
    sources: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for position, (filename, data) in enumerate(uploads):
        sources[_image_name(position)] = data
        names[_image_name(position)] = filename
    try:
        job = load_job(path)
    except JournalError:
        # Cancelled before the engine bound the job's parameters: not one query was sent.
        raise Conflict(f"job {job_id} ended before its first query: it has no report") from None
    return render_html(job, sources=sources, display_names=names)
