"""Spending one budget across a job's images: likely certificates first, hopeless images given up.

A sequential procedure asks its job's gate before each batch of estimation votes. Under a
budget the gate is a :class:`BudgetAllocator`: it holds every request until each image still
being certified has made one (a round), then grants whole batches in order of the posterior
probability of a certificate (``sequential.allocate``) within a share of the budget's headroom,
so that the votes bought meanwhile re-rank the rest before the budget is committed to them.
Images whose probability fell below ``drop_below`` are given up at once; the others wait for
the next round, and when a round can fund nobody the images still waiting go unfunded.

The gate only decides whether more votes are bought, never how they are counted, so no
allocation can weaken a certificate: each image's sequential test keeps its own 1 - alpha
guarantee under any stopping rule. Its stops are journaled with the image's result (the
reason and the number of estimation votes), and :func:`journaled_stop` replays them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from apiwrap.statistics.allocation import Admission, ImageState, allocate, certificate_probability

__all__ = ["AllocationStats", "BudgetAllocator"]


@dataclass
class AllocationStats:
    rounds: int = 0
    granted_queries: int = 0
    hopeless: int = 0
    unfunded: int = 0


class BudgetAllocator:
    """The live gate of a job with a budget; ``headroom()`` says how many queries it can still buy.

    Every image of the job must :meth:`enter` before any asks (the round waits for all of
    them) and :meth:`leave` when it is done, whatever happened, or the round never completes.
    """

    def __init__(
        self, headroom: Callable[[], int], *, drop_below: float = 0.02, round_share: float = 0.25
    ) -> None:
        if not 0 < round_share <= 1:
            raise ValueError(f"round_share must be in (0, 1], got {round_share}")
        self._headroom = headroom
        self._drop_below = drop_below
        self._round_share = round_share
        self._live: set[str] = set()
        self._waiting: dict[str, tuple[ImageState, asyncio.Future[Admission]]] = {}
        self.stats = AllocationStats()

    def enter(self, image: str) -> None:
        self._live.add(image)

    def leave(self, image: str) -> None:
        self._live.discard(image)
        if (waiting := self._waiting.pop(image, None)) is not None:
            waiting[1].cancel()
        self._maybe_round()

    async def admit(self, image: str, state: ImageState) -> Admission:
        if image not in self._live:
            raise RuntimeError(f"{image} asked the allocator for votes without entering it")
        future: asyncio.Future[Admission] = asyncio.get_running_loop().create_future()
        self._waiting[image] = (dataclasses.replace(state, key=image), future)
        self._maybe_round()
        return await future

    def _maybe_round(self) -> None:
        if not self._waiting or len(self._waiting) < len(self._live):
            return  # an image is still buying or selecting: its next request may outrank these
        self.stats.rounds += 1
        states = [state for state, _ in self._waiting.values()]
        headroom = self._headroom()
        plan = allocate(states, headroom, self._drop_below)
        # Spend only a share of the headroom per round (but always the best image's batch):
        # the votes bought meanwhile re-rank the rest before the budget is committed to them.
        allowance = max(plan[0].queries if plan else 0, int(headroom * self._round_share))
        granted = {allocation.key for allocation in allocate(states, allowance, self._drop_below)}
        for image, (state, future) in list(self._waiting.items()):
            if image in granted:
                self.stats.granted_queries += state.next_look - state.n_votes  # type: ignore[operator]
                admission = Admission.GRANTED
            elif certificate_probability(state) < self._drop_below:
                self.stats.hopeless += 1
                admission = Admission.HOPELESS
            elif not granted:
                self.stats.unfunded += 1
                admission = Admission.UNFUNDED
            else:
                continue  # outranked this round; asks again in the next
            del self._waiting[image]
            future.set_result(admission)
