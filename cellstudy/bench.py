"""Speed benchmarks that print numbers (``make bench``); targets are checked here, not in unit tests.

Each benchmark is a function returning ``{metric: value}``; :data:`BENCHMARKS` lists them in order.
Run one with ``python -m cellstudy.bench NAME``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from cellstudy import data, images, segmentation


def _timed(function: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bench_read_fields(repeats: int = 3) -> dict[str, float]:
    """Reading the ten real 5-channel 1080 × 1080 LZW TIFF fields."""
    fields = data.sample_fields(download=False)
    seconds = _timed(lambda: [images.read_field(f.folder, f.well, f.field) for f in fields.itertuples()], repeats)
    megabytes = len(fields) * 5 * 1080 * 1080 * 2 / 1e6
    return {"fields/s": len(fields) / seconds, "decoded MB/s": megabytes / seconds}


def bench_segmentation(repeats: int = 2) -> dict[str, float]:
    """Nuclei and cell segmentation of the ten real fields."""
    fields = data.sample_fields(download=False)
    stack = [images.read_field(f.folder, f.well, f.field) for f in fields.itertuples()]
    dna = images.CHANNELS.index("DNA")
    nuclei = [segmentation.segment_nuclei(image[dna]) for image in stack]
    nuclei_s = _timed(lambda: [segmentation.segment_nuclei(image[dna]) for image in stack], repeats)
    cells_s = _timed(lambda: [segmentation.segment_cells(i, n) for i, n in zip(stack, nuclei)], repeats)
    return {"nuclei fields/s": len(stack) / nuclei_s, "cells fields/s": len(stack) / cells_s}


BENCHMARKS: dict[str, Callable[[], dict[str, float]]] = {
    "read_fields": bench_read_fields,
    "segmentation": bench_segmentation,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        for metric, value in BENCHMARKS[name]().items():
            print(f"{name:<24} {metric:<28} {value:12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
