"""Ordered parallel map with bounded look-ahead, for folders of any size."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers(limit: int = 8) -> int:
    """The cores this process may run on (its CPU affinity, not the host's count), at most
    ``limit``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    return max(1, min(limit, cores))


def ordered_map(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int
) -> Iterator[tuple[Item, Result]]:
    """Yield ``(item, function(item))`` in input order, computed on ``workers`` threads.

    At most ``4 * workers`` results wait at any time, so memory stays flat however
    many items there are. ``function`` must not raise; return errors as values.
    """
    if workers <= 1:
        for item in items:
            yield item, function(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window = workers * 4
        pending = [pool.submit(function, item) for item in items[:window]]
        for index, item in enumerate(items):
            result = pending[index].result()
            pending[index] = None
            if index + window < len(items):
                pending.append(pool.submit(function, items[index + window]))
            yield item, result
