"""One settings model for every door: what a user asks for, resolved once into what a job runs.

The command line, the Python API and the HTTP service take the same options, declared once
here with their defaults, ranges and help, and turn them into a job's settings through one
function, :func:`resolve_settings`. Nothing else infers a design, a noise level or a denoiser:

- the design follows from the options: ``target_radius`` chooses the target design,
  ``max_queries`` alone the best-radius design, neither the fixed design; an explicit
  ``design`` that contradicts them is refused;
- ``sigma`` defaults to 0.25, or with a target radius to the rule's choice for it
  (:func:`apiwrap.denoisers.recommended_sigma`);
- ``denoiser="auto"`` becomes the recommended denoiser for that sigma
  (:func:`apiwrap.denoisers.recommended_denoiser`);
- an option that the chosen procedure would ignore (``n`` of a sequential design, ``n0`` of
  PREDICT, ...) is refused rather than silently dropped.

Every value is checked (finite numbers, ranges, enumerations) before a journal is opened or a
query bought; a :class:`SettingsError` names each bad option. The CLI exits 2 with it, the
Python API raises it, the service answers 422. Imports stay light (pydantic and the standard
library), so the command line can build its help from these declarations.
"""

from __future__ import annotations

import datetime
import re
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from apiwrap.budgets import parse_usd
from apiwrap.errors import ConfigurationError
from apiwrap.statistics.settings import CertificationSettings, Design, Mode, Selection

__all__ = [
    "AUTO",
    "JOB_NAME",
    "CertificationOptions",
    "ConnectionOptions",
    "JobOptions",
    "SettingsError",
    "default_job_name",
    "parse_options",
    "resolve_settings",
    "settings_options",
]

#: The ``denoiser`` value that asks for the recommended denoiser of the job's sigma.
AUTO = "auto"

#: Job names are file names in ``runs_dir``: restricted so that they can never escape it.
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

#: The statistics' own defaults: the one place the numbers are written.
_DEFAULTS = CertificationSettings(vendor="")

#: A sequential design gives an image up when its predictive chance of certifying within the
#: cap falls below this (chosen in simulation, docs/sequential.md). ``CertificationSettings``
#: keeps 0 as its own default, so that journals written without the rule replay without it.
FUTILITY = 0.02

_M = TypeVar("_M", bound=BaseModel)


class SettingsError(ConfigurationError):
    """Options that cannot make a job; :attr:`problems` holds (option, why) for each."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.describe(str))

    def describe(self, option_name: Callable[[str], str]) -> str:
        """The problems with each option spelled as the door spells it (``--max-queries``...)."""
        return "; ".join(f"{option_name(name)}: {why}" for name, why in self.problems)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CertificationOptions(_Options):
    """What a user may ask of a certification, with the defaults every door applies.

    A field left out takes its default; which fields were given matters too
    (``model_fields_set``): an option the chosen procedure would ignore is refused.
    """

    sigma: float | None = Field(
        None,
        gt=0,
        le=4,
        allow_inf_nan=False,
        description="Noise level in [0,1] pixel units. Default 0.25; with a target radius R, the smallest "
        "of 0.12, 0.25, 0.5 that is >= R (docs/denoisers.md).",
    )
    n0: int = Field(
        _DEFAULTS.n0,
        ge=1,
        le=10_000,
        description="Selection samples of selection 'leader' (certify only); estimation samples are "
        "numbered from n0 in every design.",
    )
    n: int = Field(
        _DEFAULTS.n,
        ge=1,
        le=1_000_000,
        description="Estimation samples of the fixed design (fresh, counted for the bound).",
    )
    alpha: float = Field(
        _DEFAULTS.alpha, gt=0, lt=1, allow_inf_nan=False, description="Failure probability per image."
    )
    seed: int = Field(_DEFAULTS.seed, ge=0, le=2**63 - 1, description="Noise seed.")
    denoiser: str = Field(
        AUTO,
        min_length=1,
        max_length=500,
        description="Denoiser name or checkpoint path, 'none', or 'auto': the recommended denoiser for "
        "the sigma (docs/denoisers.md).",
    )
    size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="Resize the shorter side and centre-crop to SIZE first; radii then refer to it.",
    )
    design: Design | None = Field(
        None,
        description="fixed (Cohen's n0 + n) or a sequential design: target, best. Default: target with "
        "a target radius, best with max_queries alone, else fixed.",
    )
    target_radius: float | None = Field(
        None,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Sequential: decide whether each image is certified at this radius, stopping early.",
    )
    max_queries: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description=f"Sequential: estimation queries per image at most (default {_DEFAULTS.max_queries}); "
        "alone, certifies the best radius within them.",
    )
    selection: Selection = Field(
        _DEFAULTS.selection,
        description="How the candidate is chosen: 'clean' (the vendor's label on the clean image: "
        "certifies what the vendor said, no selection query) or 'leader' (the smoothed classifier's "
        "own label: Cohen's n0 selection votes; sequential designs buy them until one label leads).",
    )
    selection_lead: int = Field(
        _DEFAULTS.selection_lead,
        ge=1,
        le=1000,
        description="Sequential designs with selection 'leader': the lead that ends selection.",
    )
    futility: float = Field(
        FUTILITY,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description=f"Sequential designs: give an image up once its predictive chance of certifying within "
        f"max_queries falls below this (default {FUTILITY}; 0: only when out of reach).",
    )


def _money(value: object) -> object:
    return None if value is None else parse_usd(value)  # type: ignore[arg-type]


class JobOptions(_Options):
    """One job's name, caps and spending rule (the command line and the Python API)."""

    job: str | None = Field(
        None,
        pattern=JOB_NAME.pattern,
        description="Job name; an interrupted job resumes under the same name. Default: a new name, "
        "MODE-DATE-TIME-RANDOM.",
    )
    max_usd: Annotated[Decimal | None, BeforeValidator(_money)] = Field(
        None, description="Stop the job before it spends more than this (USD)."
    )
    max_job_queries: int | None = Field(
        None, ge=0, description="Stop the job before more than this many billable queries."
    )
    allocate: bool = Field(
        True,
        description="Sequential with a money or query cap: fund likely certificates first and give up "
        "hopeless images early; off, spend first come, first served.",
    )
    force_denoiser: bool = Field(False, description="Use a denoiser trained for another sigma.")


class ConnectionOptions(_Options):
    """How hard the vendor is driven (the command line and the Python API)."""

    tps: float | None = Field(
        None,
        gt=0,
        le=100_000,
        allow_inf_nan=False,
        description="Requests per second allowed at the vendor (default: no limit).",
    )
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight at once.")
    max_attempts: int = Field(6, ge=1, le=100, description="Attempts per query (same bytes each time).")
    request_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Seconds to wait for the vendor's answer to one request; then it is retried and "
        "counted against the caps as possibly billed (docs/budgets.md).",
    )


def parse_options(model: type[_M], values: Mapping[str, Any]) -> _M:
    """``values`` checked against ``model``; a :class:`SettingsError` names every bad one."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or model.__name__
            message = str(error["msg"]).removeprefix("Value error, ")
            why = message[:1].lower() + message[1:]
            if error["type"] != "extra_forbidden" and "input" in error:
                why += f" (got {error['input']!r})"
            problems.append((name, why))
        raise SettingsError(problems) from None


def _design(options: CertificationOptions, problems: list[tuple[str, str]]) -> Design:
    radius, cap = options.target_radius, options.max_queries
    inferred: Design = "target" if radius is not None else "best" if cap is not None else "fixed"
    asked = options.design
    if asked is None or asked == inferred:
        return inferred
    if asked == "target":
        problems.append(("design", "the target design needs target_radius"))
    elif asked == "best" and radius is not None:
        problems.append(
            ("target_radius", "chooses the target design; the best-radius design finds the radius itself")
        )
    elif asked == "fixed":
        given = "target_radius" if radius is not None else "max_queries"
        problems.append((given, "chooses a sequential design, but design 'fixed' was asked for"))
    return asked


#: Options PREDICT has no use for: it draws n samples and tests the top two labels.
_CERTIFY_ONLY = ("n0", "selection", "selection_lead", "design", "target_radius", "max_queries", "futility")


def resolve_settings(
    options: CertificationOptions,
    *,
    vendor: str,
    mode: Mode,
    offered_denoisers: Collection[str] | None = None,
) -> CertificationSettings:
    """The complete settings of a job from what the user gave (see the module docstring).

    ``offered_denoisers`` restricts the denoiser to those names (the service offers only the
    ones it ships); otherwise any name or checkpoint path is passed on to the loader.
    Raises :class:`SettingsError` naming every option that cannot be used.
    """
    from apiwrap.denoisers import recommended_denoiser, recommended_sigma

    given = options.model_fields_set
    problems: list[tuple[str, str]] = []
    if mode == "predict":
        for name in _CERTIFY_ONLY:
            if name in given and not (name == "design" and options.design == "fixed"):
                problems.append((name, "applies to certify only; predict draws n samples (Cohen's PREDICT)"))
        design: Design = "fixed"
    else:
        design = _design(options, problems)
    if design != "fixed" and "n" in given:
        problems.append(("n", "is the fixed design's sample count; a sequential design stops by itself"))
    reads_lead = design != "fixed" and options.selection == "leader"
    if "selection_lead" in given and mode == "certify" and not reads_lead:
        problems.append(("selection_lead", "applies to sequential designs with selection 'leader'"))
    if "futility" in given and mode == "certify" and design == "fixed":
        problems.append(("futility", "applies to sequential designs; the fixed design buys all its samples"))
    if options.sigma is not None:
        sigma = options.sigma
    elif design == "target" and options.target_radius is not None:
        sigma = recommended_sigma(options.target_radius)
    else:
        sigma = _DEFAULTS.sigma
    denoiser = recommended_denoiser(sigma) if options.denoiser == AUTO else options.denoiser
    if offered_denoisers is not None and denoiser not in offered_denoisers:
        problems.append(
            ("denoiser", f"{denoiser!r} is not offered here; choose one of {', '.join(offered_denoisers)}")
        )
    if problems:
        raise SettingsError(problems)
    return CertificationSettings(
        vendor=vendor,
        sigma=sigma,
        n0=options.n0 if mode == "certify" else 0,
        n=options.n,
        alpha=options.alpha,
        seed=options.seed,
        denoiser=denoiser,
        size=options.size,
        mode=mode,
        design=design,
        target_radius=options.target_radius,
        max_queries=options.max_queries if options.max_queries is not None else _DEFAULTS.max_queries,
        selection=options.selection,
        selection_lead=options.selection_lead,
        futility=options.futility if design != "fixed" else 0.0,
    )


def settings_options(settings: CertificationSettings) -> dict[str, Any]:
    """The options that resolve to ``settings`` again: only those its procedure reads."""
    options: dict[str, Any] = {
        "sigma": settings.sigma,
        "alpha": settings.alpha,
        "seed": settings.seed,
        "denoiser": settings.denoiser,
        "size": settings.size,
    }
    if settings.mode == "certify":
        options |= {"n0": settings.n0, "selection": settings.selection, "design": settings.design}
        if settings.design != "fixed":
            options["max_queries"] = settings.max_queries
            options["futility"] = settings.futility
            if settings.selection == "leader":
                options["selection_lead"] = settings.selection_lead
        if settings.design == "target":
            options["target_radius"] = settings.target_radius
    if settings.design == "fixed":
        options["n"] = settings.n
    return options


def default_job_name(mode: Mode) -> str:
    """A new job name: the time to the second, and a random part so two starts never share one."""
    return f"{mode}-{datetime.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
