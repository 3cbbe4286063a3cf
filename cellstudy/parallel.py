"""Mapping a function over work items in worker processes, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_with_progress(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    n_workers: int,
    desc: str,
    unit: str = "item",
    progress: bool = True,
    chunksize: int = 4,
) -> list[Result]:
    """``[function(item) for item in items]``, computed by ``n_workers`` processes (in this process if 1).

    Results come back in the order of ``items`` whatever the number of workers, so seeded work stays
    deterministic. ``function`` must be picklable (a module-level function) when ``n_workers > 1``.
    """
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        if n_workers <= 1:
            return [_advance(bar, function(item)) for item in items]
        with ProcessPoolExecutor(n_workers) as pool:
            return [_advance(bar, result) for result in pool.map(function, items, chunksize=chunksize)]


def _advance(bar: tqdm, result: Result) -> Result:
    bar.update()
    return result
