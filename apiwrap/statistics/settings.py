"""The settings that define a job's certificates, as the statistics read them (resolved, complete).

Users never build these by hand: every door (the command line, the Python API, the HTTP
service) gives what the user asked for to :func:`apiwrap.engine.settings.resolve_settings`,
which applies the defaults and the rules (design, sigma, denoiser) and returns one of these.
This module imports nothing heavier than the standard library, so the command line can name
its choices without loading the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from apiwrap.errors import ConfigurationError

__all__ = [
    "DESIGNS",
    "MODES",
    "ROW_FIELDS",
    "SELECTIONS",
    "CertificationSettings",
    "Design",
    "Mode",
    "Selection",
]

Mode = Literal["certify", "predict"]
Design = Literal["fixed", "target", "best"]
Selection = Literal["clean", "leader"]
MODES: tuple[Mode, ...] = get_args(Mode)
DESIGNS: tuple[Design, ...] = get_args(Design)
SELECTIONS: tuple[Selection, ...] = get_args(Selection)

#: The settings every result row carries beside the job's name, so that a row read alone says
#: what produced it.
ROW_FIELDS = ("vendor", "sigma", "alpha", "n0", "n", "denoiser", "design")


@dataclass(frozen=True, slots=True)
class CertificationSettings:
    """What defines a job's certificates; stored in its journal and fixed for its life."""

    vendor: str
    sigma: float = 0.25
    n0: int = 20
    n: int = 100
    alpha: float = 0.001
    seed: int = 0
    #: A resolved denoiser name or checkpoint path ("none": the identity); never "auto".
    denoiser: str = "none"
    size: int | None = None
    mode: Mode = "certify"
    #: "fixed": Cohen's n0 + n. "target": is g certified at radius >= target_radius? "best":
    #: the largest radius within max_queries. Both sequential designs stop early.
    design: Design = "fixed"
    target_radius: float | None = None
    max_queries: int = 400
    #: How CERTIFY picks its candidate before any estimation vote. "clean" (default): the
    #: vendor's label on the clean image, the prediction users ask about, at no selection
    #: query. "leader": the label leading noisy selection votes, the smoothed classifier's
    #: own prediction: Cohen's n0 votes (fixed design), or votes bought only until one label
    #: leads by selection_lead, at most n0 (sequential designs). Estimation always starts at
    #: index n0, so both choices read the same estimation samples.
    selection: Selection = "clean"
    selection_lead: int = 2
    #: Sequential designs: give an image up (abstain) as soon as the predictive probability that
    #: it certifies within its cap, under the votes seen, falls below this; 0 never gives up on
    #: that ground (docs/sequential.md). Giving up only abstains, so no certificate is weakened.
    #: 0 here, so that a journal written without the rule replays without it; the doors'
    #: default is set in apiwrap.engine.settings.
    futility: float = 0.0

    def __post_init__(self) -> None:
        # The procedures' own preconditions; users meet the resolver's messages first.
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigurationError(f"sigma must be a finite number > 0, got {self.sigma}")
        if not (math.isfinite(self.alpha) and 0 < self.alpha < 1):
            raise ConfigurationError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.n < 1 or self.n0 < (1 if self.mode == "certify" else 0):
            raise ConfigurationError(f"need n >= 1 and n0 >= 1 (certify), got n0={self.n0}, n={self.n}")
        if self.size is not None and self.size < 8:
            raise ConfigurationError(f"size must be at least 8 pixels, got {self.size}")
        if self.mode not in MODES or self.design not in DESIGNS or self.selection not in SELECTIONS:
            raise ConfigurationError(
                f"unknown mode, design or selection: {self.mode!r}, {self.design!r}, {self.selection!r}"
            )
        if self.design != "fixed" and self.mode != "certify":
            raise ConfigurationError("sequential designs certify; predict uses the fixed design")
        if self.design == "target" and not (
            self.target_radius is not None and math.isfinite(self.target_radius) and self.target_radius > 0
        ):
            raise ConfigurationError("the target design needs a finite target radius > 0")
        if self.design != "fixed" and (self.max_queries < 1 or self.selection_lead < 1):
            raise ConfigurationError("max_queries and selection_lead must be positive")
        if not (math.isfinite(self.futility) and 0 <= self.futility < 1):
            raise ConfigurationError(f"futility must be a finite number in [0, 1), got {self.futility}")

    @property
    def queries_per_image(self) -> int:
        """Most queries one image can take: the clean reference plus the noisy samples."""
        if self.design != "fixed":
            return 1 + (0 if self.selection == "clean" else self.n0) + self.max_queries
        if self.mode == "predict":
            return 1 + self.n
        return 1 + (0 if self.selection == "clean" else self.n0) + self.n

    def row(self) -> dict[str, Any]:
        """The :data:`ROW_FIELDS` of these settings, for a result row that must read alone."""
        return {name: getattr(self, name) for name in ROW_FIELDS}
