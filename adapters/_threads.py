"""Run blocking SDK calls (boto3, msrest) off the event loop, in a pool each adapter owns.

The default executor of asyncio has ``min(32, cpus + 4)`` threads, shared with everything
else in the process; an adapter with its own pool gets as many requests in flight as the
engine asks for, and closing the adapter releases its threads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["BlockingRunner"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingRunner:
    """A thread pool that awaits blocking calls."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result (or exception)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop accepting work; calls already running finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
