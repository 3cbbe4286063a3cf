"""Speed benchmarks that print numbers (``make bench``); targets are checked here, not in unit tests.

Each benchmark is a function returning ``{metric: value}``; :data:`BENCHMARKS` lists them in order.
Run one with ``python -m bench NAME``.
"""

# ruff: noqa: E402 (progress bars are switched off before tqdm is first imported)

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import TextIO


def show_progress(*streams: TextIO | None) -> bool:
    """Whether progress bars belong in the output: only when every one of ``streams`` is a terminal.

    Written to a log or a pipe, each bar becomes lines of its own among the printed figures.
    """
    return all(stream is not None and stream.isatty() for stream in streams)


# tqdm reads TQDM_DISABLE when first imported (below); the benchmarks' spawned processes inherit it.
if __name__ == "__main__" and not show_progress(sys.stdout, sys.stderr):
    os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from cellstudy.columns import MODALITY, NEGCON, PERT_TYPE, SAMPLE, TARGET_LIST
from cellstudy.data import cpjump1, images, sources
from cellstudy.evaluation.retrieval import (
    MapSettings,
    compound_gene_matching,
    replicate_retrieval,
    sister_matching,
)
from cellstudy.features import classical, segmentation
from cellstudy.profiling.profiles import consensus
from cellstudy.simulation import simulate
from cellstudy.study import Study
from cellstudy.training import train
from cellstudy.training.crops import CropDataset, compute_channel_stats

Result = dict[str, float | str]
"""Metric name -> number, or a verdict (``"met"`` / ``"MISSED by ..."``) for a target."""


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
    fields = sources.sample_fields(download=False)
    seconds = _timed(lambda: [images.read_field(f.folder, f.well, f.field) for f in fields.itertuples()], repeats)
    megabytes = len(fields) * 5 * 1080 * 1080 * 2 / 1e6
    return {"fields/s": len(fields) / seconds, "decoded MB/s": megabytes / seconds}


def bench_segmentation(repeats: int = 2) -> dict[str, float]:
    """Nuclei and cell segmentation of the ten real fields."""
    fields = sources.sample_fields(download=False)
    stack = [images.read_field(f.folder, f.well, f.field) for f in fields.itertuples()]
    dna = images.CHANNELS.index("DNA")
    nuclei = [segmentation.segment_nuclei(image[dna]) for image in stack]
    nuclei_s = _timed(lambda: [segmentation.segment_nuclei(image[dna]) for image in stack], repeats)
    cells_s = _timed(lambda: [segmentation.segment_cells(i, n) for i, n in zip(stack, nuclei)], repeats)
    return {"nuclei fields/s": len(stack) / nuclei_s, "cells fields/s": len(stack) / cells_s}


def verdict(value: float, limit: float, at_most: bool = False) -> str:
    """``"met"`` if ``value`` is at least (``at_most``: at most) ``limit``, else by how much it misses."""
    met = value <= limit if at_most else value >= limit
    return "met" if met else f"MISSED by {abs(value - limit):.2f}"


@functools.cache
def matmul_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
    """The machine's float32 matmul rate (GFLOP/s): best of ``repeats`` products of two ``size`` x ``size`` matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / _timed(lambda: a @ b, repeats) / 1e9


@functools.cache
def _real_fields() -> tuple:
    """The ten real fields, read once per process."""
    return tuple(
        images.read_field(f.folder, f.well, f.field) for f in sources.sample_fields(download=False).itertuples()
    )


def _dataset(config: train.ExperimentConfig) -> CropDataset:
    fields = list(_real_fields())
    return CropDataset(fields, config.crops, compute_channel_stats(fields, config.crops.transform))


def training_batch(config: train.ExperimentConfig) -> dict:
    """The first batch of crops of the real fields, as :func:`cellstudy.training.train.train` draws it."""
    sampler = train.StepBatchSampler(0, 1, config.train.batch_size)
    return next(iter(torch.utils.data.DataLoader(_dataset(config), batch_sampler=sampler)))


def step_cost(config: train.ExperimentConfig, repeats: int = 5) -> tuple[float, float]:
    """FLOPs (counted by ``FlopCounterMode``) and best wall-clock seconds of one forward-backward-update step."""
    batch = training_batch(config)
    model = train.build_model(config).train()
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        loss, _ = model(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.after_optimizer_step(0, config.train.steps)

    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops()), _timed(step, repeats)


def training_throughput(config: train.ExperimentConfig, min_peak_percent: float = 40.0) -> Result:
    """Training images/s, achieved GFLOP/s and its share of the matmul peak (target: ``min_peak_percent``)."""
    flops, seconds = step_cost(config)
    percent = 100 * flops / seconds / 1e9 / matmul_peak_gflops()
    return {
        "images/s": config.train.batch_size / seconds,
        "GFLOP/s": flops / seconds / 1e9,
        "% of matmul peak": percent,
        f">= {min_peak_percent:g}% of peak": verdict(percent, min_peak_percent),
    }


def loader_images_per_s(config: train.ExperimentConfig, steps: int = 10) -> float:
    """Samples per second the training data loader delivers (crop sampling, filter, augmentation, normalisation)."""
    sampler = train.StepBatchSampler(0, steps, config.train.batch_size)
    loader = torch.utils.data.DataLoader(_dataset(config), batch_sampler=sampler, num_workers=config.train.num_workers)
    return steps * config.train.batch_size / _timed(lambda: list(loader), 1)


def bench_matmul() -> Result:
    """The float32 matmul peak that training efficiency is measured against."""
    return {"GFLOP/s": matmul_peak_gflops(), "torch threads": float(torch.get_num_threads())}


def bench_mae_training(run_size: str = "default", max_time_ratio: float = 0.4) -> Result:
    """MAE (mask 0.75) on crops of the real fields, and the same encoder on all tokens (mask 0); the masked step
    must take at most ``max_time_ratio`` of the all-token one.
    """
    masked = Study.create(run_size).training_config("mae")
    all_tokens = train.apply_overrides(masked, {"mae": {"mask_ratio": 0.0}})
    rates = {"masked": training_throughput(masked), "all tokens": training_throughput(all_tokens)}
    ratio = rates["all tokens"]["images/s"] / rates["masked"]["images/s"]
    results: Result = {f"{name} {metric}": value for name, rate in rates.items() for metric, value in rate.items()}
    return results | {
        "masked/all-token step time": ratio,
        f"<= {max_time_ratio:g} x all-token step": verdict(ratio, max_time_ratio, at_most=True),
    }


def bench_dino_training(run_size: str = "default") -> Result:
    """DINO (2 global and the run size's local crops) on crops of the real fields."""
    return training_throughput(Study.create(run_size).training_config("dino"))


def bench_loader(run_size: str = "default") -> Result:
    """The training data loader (the run size's workers) against what training consumes; it must be faster."""
    results: Result = {}
    for method in train.METHODS:
        config = Study.create(run_size).training_config(method)
        loader = loader_images_per_s(config)
        ratio = loader / (config.train.batch_size / step_cost(config)[1])
        results |= {
            f"{method} loader images/s": loader,
            f"{method} loader/training": ratio,
            f"{method} loader faster": verdict(ratio, 1.0),
        }
    return results


BENCH_SCREEN = replace(simulate.SimulationConfig(), n_genes=4, n_replicate_plates=2, negcon_wells_per_plate=4)
"""A small slice of the default screen's design with its image geometry (320 px fields, binning 2),
so that its per-well costs are the default screen's."""


def bench_simulated_screen(n_workers: int = 2, budget_s: float = 360.0) -> Result:
    """Rendering and classical features (wells/s) of :data:`BENCH_SCREEN` on ``n_workers`` processes, and the
    seconds the default screen (:class:`cellstudy.simulation.simulate.SimulationConfig`) would need for both, at most
    ``budget_s``. Rates include each stage's fixed costs (design, process start-up), so the estimate errs long.
    """
    config = replace(BENCH_SCREEN, n_workers=n_workers)
    with tempfile.TemporaryDirectory() as folder:
        render_s = _timed(lambda: simulate.simulate(config, folder, progress=False), 1)
        screen = simulate.SimulationResult.load(folder)
        fields = screen.field_table()
        classical_s = _timed(lambda: classical.profile_fields(fields, n_workers=n_workers, progress=False), 1)
    wells = len(screen.wells)
    default_wells = len(simulate.design(simulate.SimulationConfig()))
    estimate = default_wells * (render_s + classical_s) / wells
    return {
        "benchmark wells": float(wells),
        "render wells/s": wells / render_s,
        "classical wells/s": wells / classical_s,
        "default screen wells": float(default_wells),
        "default render + classical s": estimate,
        f"<= {budget_s:g} s": verdict(estimate, budget_s, at_most=True),
    }


def planted_profiles(wells: pd.DataFrame, n_features: int, seed: int) -> pd.DataFrame:
    """Random profiles with retrievable structure: per gene a random direction; guides and ORFs
    carry their gene's, compounds the mean of their targets' (their own if none is perturbed); plus unit noise.
    """
    rng = np.random.default_rng(seed)
    genes = {gene: rng.normal(size=n_features) for gene in cpjump1.genes()}
    strength = {"compound": 1.5, "crispr": 1.0, "orf": 0.4}

    def effect(modality: str, row: pd.Series) -> np.ndarray:
        if row[NEGCON] or row[PERT_TYPE] == cpjump1.EMPTY_WELL:
            return np.zeros(n_features)
        targets = [genes[t] for t in str(row[TARGET_LIST]).split(cpjump1.TARGET_SEPARATOR) if t in genes]
        signal = np.mean(targets, axis=0) if targets else rng.normal(size=n_features)
        return strength[modality] * signal / np.sqrt(n_features) * 3

    samples = wells.drop_duplicates([MODALITY, SAMPLE]).set_index([MODALITY, SAMPLE])
    effects = {key: effect(key[0], row) for key, row in samples.iterrows()}
    signal = np.stack([effects[key] for key in zip(wells[MODALITY], wells[SAMPLE])])
    values = (signal + rng.normal(size=signal.shape) / np.sqrt(n_features) * 3).astype(np.float32)
    features = pd.DataFrame(values, columns=[f"feature_{i:04d}" for i in range(n_features)], index=wells.index)
    return pd.concat([wells, features], axis="columns")


def scale_benchmark(
    n_wells: int = 15_275, n_features: int = 1000, null_size: int = 100_000, seed: int = 0
) -> dict[str, float]:
    """Time the three tasks on a CPJUMP1-sized table: the real design of the profiled wells, planted random profiles.

    Parameters
    ----------
    n_wells
        Wells kept (a seeded random subset of the 15,275 profiled wells when smaller).
    n_features
        Feature columns.
    null_size
        Draws per permutation null.

    Returns
    -------
    Seconds per stage (``replicate_s``, ``consensus_s``, ``sister_s``,
    ``compound_gene_s``, ``total_s``) and ``peak_rss_gb``, the process's peak
    resident memory (``resource.getrusage``; it includes whatever ran before).
    """
    wells = cpjump1.well_table(profiled_only=True)
    if n_wells < len(wells):
        wells = wells.sample(n=n_wells, random_state=seed).sort_index()
    profiles = planted_profiles(wells, n_features, seed)
    settings = MapSettings(null_size=null_size, seed=seed)
    timings: dict[str, float] = {}

    def timed(name: str, function: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        start = time.perf_counter()
        result = function()
        timings[name] = time.perf_counter() - start
        return result

    replicates = timed("replicate_s", lambda: replicate_retrieval(profiles, settings))
    consensus_profiles = timed("consensus_s", lambda: consensus(profiles))
    timed("sister_s", lambda: sister_matching(consensus_profiles, replicates, settings))
    timed(
        "compound_gene_s", lambda: compound_gene_matching(consensus_profiles, consensus_profiles, replicates, settings)
    )
    timings["total_s"] = sum(timings.values())
    timings["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return timings


def bench_retrieval_scale(budget_s: float = 120.0, budget_gb: float = 8.0) -> Result:
    """The three retrieval tasks on a CPJUMP1-sized table (:func:`scale_benchmark`: 15,275
    wells x 1,000 features, null size 100,000), at most ``budget_s`` seconds and ``budget_gb`` peak memory.

    Runs in a fresh process, so its peak memory is the benchmark's alone.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        timings = pool.submit(scale_benchmark).result()
    return timings | {
        f"<= {budget_s:g} s": verdict(timings["total_s"], budget_s, at_most=True),
        f"<= {budget_gb:g} GB peak": verdict(timings["peak_rss_gb"], budget_gb, at_most=True),
    }


BENCHMARKS: dict[str, Callable[[], Result]] = {
    "read_fields": bench_read_fields,
    "segmentation": bench_segmentation,
    "matmul": bench_matmul,
    "mae_training": bench_mae_training,
    "dino_training": bench_dino_training,
    "loader": bench_loader,
    "simulated_screen": bench_simulated_screen,
    "retrieval_scale": bench_retrieval_scale,
}


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (default: all) and print their numbers, one per line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        for metric, value in BENCHMARKS[name]().items():
            shown = f"{value:12.2f}" if isinstance(value, float) else f"{value:>12}"
            print(f"{name:<16} {metric:<36} {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
