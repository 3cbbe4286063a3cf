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
import tracemalloc
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

from cellstudy.applications import label_efficiency
from cellstudy.columns import MODALITY, NEGCON, PERT_TYPE, PLATE, SAMPLE, TARGET_LIST
from cellstudy.data import cpjump1, decodedstore, gallery, images, sources
from cellstudy.data.fieldstore import FieldStore
from cellstudy.evaluation.retrieval import (
    MapSettings,
    compound_gene_matching,
    replicate_retrieval,
    sister_matching,
)
from cellstudy.features import classical, segmentation
from cellstudy.parallel import map_with_progress
from cellstudy.profiling import embed
from cellstudy.profiling.profiles import consensus
from cellstudy.simulation import simulate
from cellstudy.study import Study, runsize
from cellstudy.training import train
from cellstudy.training.crops import CropDataset, compute_channel_stats, crop_loader

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
    loader = crop_loader(_dataset(config), sampler, config.train.num_workers)
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


def _cpu_seconds(function: Callable[[], object]) -> float:
    """CPU seconds (user and system) this process spends in ``function``: a single-process rate per core that
    other work on the machine disturbs less than wall-clock time.
    """
    start = time.process_time()
    function()
    return time.process_time() - start


def _synthetic_field(real: tuple, index: int) -> np.ndarray:
    """Field ``index`` of the synthetic plate: a real field, rolled by a seeded offset and turned, so that its
    cells and its compressibility are a real field's.
    """
    rng = np.random.default_rng([0, index])
    field = np.roll(real[index % len(real)], tuple(rng.integers(1, 1080, size=2)), axis=(1, 2))
    return np.ascontiguousarray(np.rot90(field, k=int(rng.integers(4)), axes=(1, 2)))


def _write_synthetic_field(task: tuple[str, str, int, int]) -> None:
    """Write one field of the synthetic plate (``folder, well, field, index``)."""
    folder, well, field, index = task
    images.write_field(folder, well, field, _synthetic_field(_real_fields(), index))


def synthetic_plate(folder: str, n_fields: int, fields_per_well: int = 4, n_workers: int = 2) -> pd.DataFrame:
    """A plate of ``n_fields`` 1080 x 1080 fields written as the Gallery's (flat Phenix-named LZW TIFFs in the plate's
    folder), ``fields_per_well`` per well in row-major well order (:func:`_synthetic_field`); its field table.
    """
    wells = [images.well_id(row, col) for row in range(1, 17) for col in range(1, 25)]
    tasks = [(folder, wells[index // fields_per_well], index % fields_per_well + 1, index) for index in range(n_fields)]
    map_with_progress(_write_synthetic_field, tasks, n_workers, "writing a plate", "field", False, chunksize=1)
    return images.list_fields(folder)


STORE_VIEWS = {"mae": {}, "dino": {"crops": {"n_local": 8}}}
"""Changes to the ``full`` run size's crops for the store benchmark: MAE's 224 px crop; DINO with 2 x 224 px and
8 x 96 px views (the preset has 6 local views)."""
STORE_TARGETS = {"mae": 200.0, "dino": 40.0}
"""Samples per second per core from the decoded store that 16 cores need to feed a GPU (MAE: 3,000/s; DINO: 640/s)."""


def _samples_per_cpu_second(dataset: CropDataset, count: int) -> float:
    """Samples per CPU second of the first ``count`` samples of ``dataset``."""
    return count / _cpu_seconds(lambda: [dataset[index] for index in range(count)])


def crop_rates(store: FieldStore, tiffs: FieldStore, samples: dict[str, tuple[int, int]]) -> Result:
    """Samples/s per core (:func:`_cpu_seconds`) of the ``full`` size's crops (:data:`STORE_VIEWS`) read from the
    decoded ``store`` and from the same fields' ``tiffs``; ``samples[method]``: samples timed from each.

    Each field's cell threshold is computed before timing, as a long run has it (computed once per field).
    """
    results: Result = {}
    for method, (from_store, from_tiffs) in samples.items():
        config = train.apply_overrides(Study.create("full").training_config(method), STORE_VIEWS[method])
        stats = compute_channel_stats(store, config.crops.transform)
        rates = {}
        for name, fields, count in (("store", store, from_store), ("TIFF", tiffs, from_tiffs)):
            dataset = CropDataset(fields, config.crops, stats)
            for which in range(len(store)):
                dataset.threshold(which, store[which][config.crops.dna_channel])
            rates[name] = _samples_per_cpu_second(dataset, count)
        unit = "crops" if method == "mae" else "samples"
        results |= {
            f"{method} {unit}/s per core, store": rates["store"],
            f"{method} {unit}/s per core, TIFF": rates["TIFF"],
            f"{method} store/TIFF": rates["store"] / rates["TIFF"],
            f"{method} >= {STORE_TARGETS[method]:g}/s per core": verdict(rates["store"], STORE_TARGETS[method]),
        }
    return results


def store_benchmark(
    fields: pd.DataFrame, folder: str, decoded: int, samples: dict[str, tuple[int, int]], n_workers: int = 2
) -> Result:
    """The decoded store of a field table: TIFF fields decoded/s per core (the first ``decoded`` fields),
    conversion fields/s with ``n_workers`` processes into a new store in ``folder``, size per field (TIFF and
    store) and :func:`crop_rates`.
    """
    tiffs = FieldStore(fields, progress=False)
    decode_s = _cpu_seconds(lambda: [tiffs[index] for index in range(decoded)])
    convert_s = _timed(lambda: decodedstore.convert_fields(fields, folder, n_workers, progress=False), 1)
    store = FieldStore(decodedstore.convert_fields(fields, folder, n_workers, progress=False), progress=False)
    tiff_bytes = images.tiff_bytes(fields)
    store_bytes = sum(os.path.getsize(path) for path in store.decoded)
    return {
        "fields": float(len(fields)),
        "TIFF fields decoded/s per core": decoded / decode_s,
        f"conversion fields/s, {n_workers} processes": len(fields) / convert_s,
        "TIFF MB per field": tiff_bytes / len(fields) / 1e6,
        "store MB per field": store_bytes / len(fields) / 1e6,
    } | crop_rates(store, tiffs, samples)


def bench_store_real(samples: dict[str, tuple[int, int]] | None = None) -> Result:
    """The decoded store of the ten real 1080 x 1080 fields (:func:`store_benchmark`)."""
    fields = sources.sample_fields(download=False)
    with tempfile.TemporaryDirectory() as folder:
        return store_benchmark(fields, folder, len(fields), samples or {"mae": (400, 30), "dino": (100, 20)})


def bench_store_plate(
    n_fields: int = 200, decoded: int = 40, samples: dict[str, tuple[int, int]] | None = None
) -> Result:
    """The decoded store of a synthetic plate of ``n_fields`` fields in the Gallery's layout (:func:`synthetic_plate`,
    :func:`store_benchmark`; TIFF decoding timed on ``decoded`` of them).
    """
    with tempfile.TemporaryDirectory() as folder:
        fields = synthetic_plate(os.path.join(folder, "BR00000000"), n_fields)
        samples = samples or {"mae": (400, 30), "dino": (100, 20)}
        return store_benchmark(fields, os.path.join(folder, "decoded"), decoded, samples)


def _traced_peak(function: Callable[[], object]) -> tuple[object, int]:
    """What ``function`` returns, and the peak bytes allocated while it ran (``tracemalloc``: numpy's and Python's
    allocations; pages of memory-mapped files are not allocations and do not count).
    """
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def full_crispr_fields() -> int:
    """Fields of the ``full`` run size's CRISPR plates (the fields label efficiency reads), counted from the design."""
    selection = runsize.FULL.gallery
    table = gallery.screen_field_table(selection.plates, "gallery", selection.fields, selection.wells)
    return int((table[MODALITY] == "crispr").sum())


def tile_memory(fields: pd.DataFrame, full_fields: int) -> Result:
    """Memory of label efficiency's tiles of ``fields`` (a decoded field table of 1080 x 1080 fields), with the
    ``full`` run size's crops (224 px) and tiles per field, held as float32 (the former way) and as places
    (:class:`cellstudy.applications.label_efficiency.TileSet`), extrapolated to ``full_fields`` fields.

    Peaks are :func:`_traced_peak`'s. The float32 set is extrapolated in proportion to its tiles; the tile set's
    building peak as ``peak(N) + (F - N) * slope``, with ``F = full_fields``, ``N`` the fields here and the slope
    per field between the peaks of the first ``N // 2`` and of all ``N`` fields.
    """
    study = Study.create("full")
    crops = study.training_config("mae").crops
    config = study.label_efficiency_config()
    stats = compute_channel_stats(FieldStore(fields, progress=False), crops.transform)
    model = train.PretrainedEncoder(None, stats, crops, "mae", 0)
    per_field = config.tiles_per_field

    def load(table: pd.DataFrame) -> label_efficiency.TileSet:
        return label_efficiency.load_well_tiles(table, model, per_field, config.tile_seed, progress=False).tiles

    float32, float32_peak = _traced_peak(
        lambda: np.concatenate(
            [part.tiles for part in embed.field_tiles(fields, stats, crops, crops.global_size, per_field, 0, False)]
        )
    )
    half = len(fields) // 2
    _, half_peak = _traced_peak(lambda: load(fields.head(half)))
    tiles, peak = _traced_peak(lambda: load(fields))
    _, batch_peak = _traced_peak(lambda: tiles[np.arange(min(len(tiles), config.fine_tuning.batch_size))])
    _, embed_batch_peak = _traced_peak(lambda: tiles[np.arange(min(len(tiles), config.embed_batch_size))])
    full_tiles = full_fields * per_field
    slope = (peak - half_peak) / (len(fields) - half)
    return {
        "fields": float(len(fields)),
        "tiles": float(len(tiles)),
        "float32 bytes per tile": float32.nbytes / len(float32),
        "held bytes per tile": tiles.nbytes / len(tiles),
        "float32 build peak MB": float32_peak / 1e6,
        "build peak MB": peak / 1e6,
        f"batch of {config.fine_tuning.batch_size} peak MB": batch_peak / 1e6,
        f"batch of {config.embed_batch_size} peak MB": embed_batch_peak / 1e6,
        "full CRISPR fields": float(full_fields),
        "full tiles": float(full_tiles),
        "full float32 GB": full_tiles * float32.nbytes / len(float32) / 1e9,
        "full float32 build peak GB": full_tiles * float32_peak / len(float32) / 1e9,
        "full held MB": full_tiles * tiles.nbytes / len(tiles) / 1e6,
        "full build peak MB": (peak + (full_fields - len(fields)) * slope) / 1e6,
    }


def bench_label_efficiency_tiles(n_fields: int = 40) -> Result:
    """Label efficiency's tile memory (:func:`tile_memory`) on a decoded synthetic plate of ``n_fields`` fields
    (:func:`synthetic_plate`), extrapolated to the ``full`` run size's CRISPR fields (:func:`full_crispr_fields`).
    """
    with tempfile.TemporaryDirectory() as folder:
        fields = synthetic_plate(os.path.join(folder, "BR00000000"), n_fields)
        decoded = decodedstore.convert_fields(fields, os.path.join(folder, "decoded"), 2, progress=False)
        return tile_memory(decoded, full_crispr_fields())


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


def stratified_subset(wells: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """About ``fraction`` of each plate's control and other wells, at least one of each: every plate keeps a control."""
    parts = [
        rows.sample(n=max(1, round(fraction * len(rows))), random_state=seed)
        for _, rows in wells.groupby([PLATE, NEGCON], sort=True)
    ]
    return pd.concat(parts).sort_index()


def scale_benchmark(
    n_wells: int = 15_275, n_features: int = 1000, null_size: int = 100_000, seed: int = 0
) -> dict[str, float]:
    """Time the three tasks on a CPJUMP1-sized table: the real design of the profiled wells, planted random profiles.

    Parameters
    ----------
    n_wells
        Wells kept (about; a seeded random subset of the 15,275 profiled wells per plate and control status
        when smaller).
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
        wells = stratified_subset(wells, n_wells / len(wells), seed)
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
    "store_real": bench_store_real,
    "store_plate": bench_store_plate,
    "label_efficiency_tiles": bench_label_efficiency_tiles,
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
