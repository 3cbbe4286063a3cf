"""Training crops from 5-channel fields: sampling, cell-content filter, augmentation, normalisation.

Crops are cut at native resolution (no resizing) from ``(C, H, W)`` fields, so
a crop is a numpy slice. The fields are a list of arrays in memory, or a
:class:`~cellstudy.data.fieldstore.FieldStore` that reads each field from disk when
a sample needs it (for screens larger than memory). Each training sample is a
*region* of the field that contains cells, and ``n_global`` global plus
``n_local`` local crops (views) cut from that region, each also containing
cells (MAE: one global crop, region = crop; DINO: two global and several local
crops that overlap because they share the region).

Cell-content filter (Kim et al. 2025): a crop is kept if at least
``min_cell_fraction`` of its pixels are brighter than ``otsu_factor`` times the
Otsu threshold of the whole field's DNA channel.

Normalisation: ``log1p`` of the raw intensities (fluorescence is heavy-tailed;
``log1p`` makes the per-channel statistics meaningful), then per-channel
standardisation with the dataset's mean and standard deviation
(:func:`compute_channel_stats`), or per crop (Kraus et al. 2024) if chosen.
Augmentation (per view): one of the 8 flips/rotations, and per channel an
intensity scale and a gamma, both applied to raw intensities before ``log1p``.

Sample ``i`` of a :class:`CropDataset` is a pure function of ``(seed, i)``, so
any split of the sample stream over processes, restarts or loader workers sees the same crops;
:func:`crop_loader` batches them with worker processes that prefetch ahead of a GPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from skimage.filters import threshold_otsu
from tqdm import tqdm

from cellstudy.data.fieldstore import FieldStore
from cellstudy.data.images import CHANNELS, DEFAULT_LAYOUT, layout_channels, list_fields

TRANSFORMS = ("log1p", "raw")
"""Intensity transforms applied before standardisation."""
STANDARDISE = ("dataset", "crop")
"""Standardisation modes: dataset statistics, or each crop's own per-channel mean and std."""
PREFETCH_BATCHES = 4
"""Batches each loader worker prepares ahead of the one being consumed (:func:`crop_loader`)."""


@dataclass
class CropConfig:
    """How training samples are cut, filtered, augmented and normalised.

    Attributes
    ----------
    global_size
        Side (px) of the global crops; MAE's only crop. At native resolution
        64 px holds a few U2OS cells; 224 px is the GPU preset's.
    n_global
        Global crops per sample: 1 for MAE, 2 for DINO (the teacher's views).
    local_size
        Side (px) of DINO's local crops (about 0.4-0.5 of ``global_size``).
    n_local
        Local crops per sample (0 for MAE; DINO: 6-10; fewer on CPU).
    region_size
        Side (px) of the region all views of a sample are cut from. Equal to
        ``global_size`` for MAE; for DINO 1.25-1.5x on large crops, so that global
        crops overlap partly (too large a region and the two views share nothing).
        On small crops (64 px) equal to ``global_size`` worked better: each 32-px
        local crop then lies inside both global views.
    dna_channel
        Index of the DNA stain in a field's channel axis (``CHANNELS`` order).
    otsu_factor
        A pixel counts as cell if brighter than this times the field's DNA Otsu threshold.
    min_cell_fraction
        Minimum fraction of cell pixels for a region or crop to be kept (0.01).
        Raise it to avoid near-empty crops in sparse wells.
    max_tries
        Random positions tried per crop before searching all positions of the
        field or region (slower, exact); where no crop qualifies, the one with
        the most cell pixels is used (fields without cells still yield crops).
    transform
        ``"log1p"`` (default) or ``"raw"`` intensities before standardisation.
    standardise
        ``"dataset"`` (per-channel statistics of the whole training set; keeps
        intensity differences between wells, which carry phenotype) or ``"crop"``
        (each crop's own per-channel statistics, Kraus et al. 2024; removes
        plate/illumination intensity shifts, and the phenotype in them).
    flips
        Random flips and 90-degree rotations (microscopy has no up or left).
    intensity_jitter
        Per-channel intensity scale drawn uniformly from ``[1 - j, 1 + j]``.
    gamma_jitter
        Per-channel gamma drawn log-uniformly from ``[1 / (1 + g), 1 + g]``,
        applied as ``scale * (x / scale) ** gamma`` with the channel's 99.9th
        percentile as ``scale``. 0 disables.
    """

    global_size: int = 64
    n_global: int = 1
    local_size: int = 32
    n_local: int = 0
    region_size: int = 64
    dna_channel: int = CHANNELS.index("DNA")
    otsu_factor: float = 0.7
    min_cell_fraction: float = 0.01
    max_tries: int = 20
    transform: str = "log1p"
    standardise: str = "dataset"
    flips: bool = True
    intensity_jitter: float = 0.2
    gamma_jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if self.standardise not in STANDARDISE:
            raise ValueError(f"standardise must be one of {STANDARDISE}, got {self.standardise!r}")
        sizes = [self.region_size, self.global_size] + ([self.local_size] if self.n_local else [])
        if sizes != sorted(sizes, reverse=True) or min(sizes) < 1:
            raise ValueError(
                f"need region_size >= global_size >= local_size >= 1, got {self.region_size}, "
                f"{self.global_size}, {self.local_size}"
            )

    @property
    def view_sizes(self) -> list[int]:
        """Side of each view of a sample, global crops first."""
        return [self.global_size] * self.n_global + [self.local_size] * self.n_local


@dataclass
class ChannelStats:
    """Per-channel intensity statistics of a dataset, used to normalise crops.

    Attributes
    ----------
    mean, std
        Mean and standard deviation of the transformed intensities, per channel.
    scale
        99.9th percentile of the raw intensities, per channel (gamma jitter's reference).
    transform
        The transform (:data:`TRANSFORMS`) ``mean`` and ``std`` were computed after.
    """

    mean: list[float]
    std: list[float]
    scale: list[float]
    transform: str = "log1p"

    def to_dict(self) -> dict:
        """Plain-python form (for JSON and ``torch.load(weights_only=True)`` checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> ChannelStats:
        """Inverse of :meth:`to_dict`."""
        return cls(**values)


def transform_intensities(x: np.ndarray, transform: str) -> np.ndarray:
    """Apply ``transform`` (``"log1p"`` or ``"raw"``) to non-negative float intensities."""
    return np.log1p(x) if transform == "log1p" else x


def compute_channel_stats(
    fields: Sequence[np.ndarray],
    transform: str = "log1p",
    pixels_per_field: int = 65536,
    percentile_pixels: int = 2**22,
    seed: int = 0,
    max_fields: int | None = 2000,
) -> ChannelStats:
    """Per-channel statistics of ``fields`` from a seeded random sample of pixels, in bounded memory and time.

    Screens of more than ``max_fields`` fields contribute a seeded random
    sample of ``max_fields`` of them (so that a screen read from disk, such as
    a :class:`~cellstudy.data.fieldstore.FieldStore`, is not read in full). Each
    field contributes ``pixels_per_field`` pixels drawn without
    replacement (all of them if it has fewer). ``mean`` and ``std`` are those
    of all sampled pixels, merged field by field from per-field moments, so
    memory does not grow with the number of fields. ``scale`` (the 99.9th
    percentile) is taken over an even share of at most ``percentile_pixels``
    of them in total (at least one per field). When the samples cover every
    pixel, the results equal numpy's over all pixels of all fields.

    Parameters
    ----------
    fields
        ``(C, H, W)`` arrays with the same channels (read one at a time, so a lazy sequence works).
    transform
        Intensity transform (:data:`TRANSFORMS`) applied before ``mean`` and ``std``.
    pixels_per_field
        Pixels sampled per field for the moments.
    percentile_pixels
        Raw pixel values kept over all fields for the percentile; bounds memory
        at ``percentile_pixels x C`` values of the fields' dtype.
    seed
        Seed of the pixel sampling (field ``i`` uses the stream ``(seed, i)``) and of the field sample.
    max_fields
        Fields read at most (``None``: all). 2000 fields of 65,536 pixels pin the statistics down far
        more closely than the augmentation's jitter moves them.

    Raises
    ------
    ValueError
        ``fields`` is empty, or a channel is constant over all sampled pixels (its standard deviation is 0).
    """
    if not fields:
        raise ValueError("no fields to compute channel statistics from")
    chosen = range(len(fields))
    if max_fields is not None and len(fields) > max_fields:
        chosen = np.sort(np.random.default_rng([seed, len(fields)]).choice(len(fields), max_fields, replace=False))
    percentile_share = max(1, percentile_pixels // len(chosen))
    counts, means, squares, lows, highs, kept = [], [], [], [], [], []
    for index in map(int, chosen):
        field = fields[index]
        pixels = field.reshape(field.shape[0], -1)
        order = np.random.default_rng([seed, index]).choice(
            pixels.shape[1], min(pixels_per_field, pixels.shape[1]), replace=False
        )
        raw = pixels[:, order]
        values = transform_intensities(raw.astype(np.float64), transform)
        counts.append(values.shape[1])
        means.append(values.mean(axis=1))
        squares.append(((values - means[-1][:, None]) ** 2).sum(axis=1))
        lows.append(raw.min(axis=1))
        highs.append(raw.max(axis=1))
        kept.append(raw[:, :percentile_share].copy())  # a copy: the rest of the sample is freed
    constant = np.flatnonzero(np.min(lows, axis=0) == np.max(highs, axis=0))
    if constant.size:
        raise ValueError(f"channel(s) {constant.tolist()} are constant over all fields")
    mean, std = _pooled_moments(np.array(counts), np.array(means), np.array(squares))
    scale = np.maximum(np.percentile(np.concatenate(kept, axis=1), 99.9, axis=1), 1.0)
    return ChannelStats(mean.tolist(), std.tolist(), scale.tolist(), transform)


def _pooled_moments(counts: np.ndarray, means: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of the union of groups, per channel.

    ``counts`` (G,) are the groups' sizes, ``means`` and ``squares`` (G, C) their
    means and sums of squared deviations from their mean; the pooled sum of
    squares adds each group's spread around the pooled mean (law of total variance).
    """
    total = counts.sum()
    mean = counts @ means / total
    spread = squares.sum(axis=0) + counts @ (means - mean) ** 2
    return mean, np.sqrt(spread / total)


def normalise(crop: np.ndarray, stats: ChannelStats, standardise: str = "dataset") -> np.ndarray:
    """Transform and standardise raw intensities ``(..., C, H, W)`` to float32.

    ``standardise="dataset"`` uses ``stats``; ``"crop"`` uses each image's own
    per-channel mean and standard deviation (after the transform).
    """
    x = transform_intensities(np.asarray(crop, dtype=np.float32), stats.transform)
    if standardise == "crop":
        mean = x.mean(axis=(-2, -1), keepdims=True)
        std = x.std(axis=(-2, -1), keepdims=True)
    else:
        mean = np.asarray(stats.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(stats.std, dtype=np.float32)[:, None, None]
    return ((x - mean) / np.maximum(std, 1.0e-6)).astype(np.float32)


def cell_threshold(dna: np.ndarray, otsu_factor: float = 0.7) -> float:
    """Intensity above which a DNA pixel counts as cell: ``otsu_factor`` x the field's Otsu threshold."""
    if dna.min() == dna.max():
        return float(dna.max())
    return otsu_factor * float(threshold_otsu(dna))


def cell_fraction(dna_crop: np.ndarray, threshold: float) -> float:
    """Fraction of pixels of a DNA crop brighter than ``threshold``."""
    return float(np.mean(dna_crop > threshold))


def crop_fractions(dna: np.ndarray, threshold: float, bounds: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Cell fraction of every ``size`` crop inside ``bounds``, indexed by top-left corner relative to the bounds."""
    top, left, bottom, right = bounds
    bright = (dna[top:bottom, left:right] > threshold).astype(np.int64)
    integral = np.pad(bright.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    return sums / size**2


def sample_position(
    rng: np.random.Generator,
    dna: np.ndarray,
    threshold: float,
    bounds: tuple[int, int, int, int],
    size: int,
    min_fraction: float,
    max_tries: int,
) -> tuple[int, int]:
    """Top-left corner of a random ``size`` crop inside ``bounds = (top, left, bottom, right)`` that contains cells.

    Draws up to ``max_tries`` uniform positions and returns the first with at
    least ``min_fraction`` cell pixels. If none does, picks uniformly among all
    qualifying positions (found with an integral image); if there are none,
    returns the position with the most cell pixels.
    """
    top, left, bottom, right = bounds
    for _ in range(max_tries):
        y = int(rng.integers(top, bottom - size + 1))
        x = int(rng.integers(left, right - size + 1))
        if cell_fraction(dna[y : y + size, x : x + size], threshold) >= min_fraction:
            return y, x
    fractions = crop_fractions(dna, threshold, bounds, size)
    valid = np.argwhere(fractions >= min_fraction)
    dy, dx = valid[rng.integers(len(valid))] if len(valid) else np.unravel_index(np.argmax(fractions), fractions.shape)
    return top + int(dy), left + int(dx)


def augment(crop: np.ndarray, rng: np.random.Generator, config: CropConfig, stats: ChannelStats) -> np.ndarray:
    """Random flip/rotation and per-channel intensity and gamma jitter of a raw ``(C, H, W)`` crop (float32)."""
    x = np.asarray(crop, dtype=np.float32)
    channels = x.shape[0]
    if config.flips:
        x = np.rot90(x, k=int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
    if config.gamma_jitter:
        scale = np.asarray(stats.scale, dtype=np.float32)[:, None, None]
        log_range = math.log1p(config.gamma_jitter)
        gamma = np.exp(rng.uniform(-log_range, log_range, channels)).astype(np.float32)[:, None, None]
        x = scale * (x / scale) ** gamma
    if config.intensity_jitter:
        jitter = config.intensity_jitter
        x = x * rng.uniform(1.0 - jitter, 1.0 + jitter, channels).astype(np.float32)[:, None, None]
    return np.ascontiguousarray(x)


def field_shapes(fields: Sequence[np.ndarray]) -> list[tuple[int, ...]]:
    """Shape of each field: the sequence's ``shapes`` where it knows them without reading pixels
    (:attr:`cellstudy.data.fieldstore.FieldStore.shapes`), else each array's ``shape``.
    """
    known = getattr(fields, "shapes", None)
    return list(known) if known is not None else [np.shape(field) for field in fields]


class CropDataset(torch.utils.data.Dataset):
    """Endless stream of random multi-view crops from fields.

    Parameters
    ----------
    fields
        ``(C, H, W)`` arrays (uint16 or float), at least ``region_size`` on each
        side: a list in memory, or a sequence that reads each field when indexed
        and tells its ``shapes`` (:class:`~cellstudy.data.fieldstore.FieldStore`; it is
        not read here, only its shapes are checked).
    config
        Crop sampling, filter, augmentation and normalisation settings.
    stats
        Channel statistics for normalisation (:func:`compute_channel_stats`).
    seed
        Sample ``i`` depends only on ``(seed, i)``.
    names
        Names of the fields for error messages (default ``field 0``, ``field 1``, ...).

    Item ``i`` is ``{"views": [tensor (C, s, s) per view], "seed": int}``; ``seed`` is
    a per-sample random integer for any randomness the model needs (MAE's mask).
    A field's cell threshold is computed when a sample first uses it and kept.
    """

    def __init__(
        self,
        fields: Sequence[np.ndarray],
        config: CropConfig,
        stats: ChannelStats,
        seed: int = 0,
        names: Sequence[str] | None = None,
    ) -> None:
        names = list(names) if names is not None else [f"field {i}" for i in range(len(fields))]
        if not len(fields):
            raise ValueError("no fields to cut crops from")
        shapes = field_shapes(fields)
        for name, shape in zip(names, shapes):
            if len(shape) != 3 or min(shape[1:]) < config.region_size:
                raise ValueError(
                    f"{name}: expected a (C, H, W) field at least {config.region_size} px on each side, "
                    f"got shape {tuple(shape)}"
                )
            if shape[0] != shapes[0][0]:
                raise ValueError(f"{name} has {shape[0]} channels, {names[0]} has {shapes[0][0]}")
        self.fields = fields if hasattr(fields, "shapes") else list(fields)
        self.config = config
        self.stats = stats
        self.seed = seed
        self.thresholds: dict[int, float] = {}

    def threshold(self, which: int, dna: np.ndarray) -> float:
        """Cell threshold of field ``which`` (whose DNA channel is ``dna``), computed once."""
        if which not in self.thresholds:
            self.thresholds[which] = cell_threshold(dna, self.config.otsu_factor)
        return self.thresholds[which]

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        cfg = self.config
        which = int(rng.integers(len(self.fields)))
        field = self.fields[which]
        dna = field[cfg.dna_channel]
        threshold = self.threshold(which, dna)
        height, width = dna.shape

        def find(bounds: tuple[int, int, int, int], size: int) -> tuple[int, int]:
            return sample_position(rng, dna, threshold, bounds, size, cfg.min_cell_fraction, cfg.max_tries)

        top, left = find((0, 0, height, width), cfg.region_size)
        region = (top, left, top + cfg.region_size, left + cfg.region_size)
        views = []
        for size in cfg.view_sizes:
            y, x = find(region, size)
            crop = augment(field[:, y : y + size, x : x + size], rng, cfg, self.stats)
            views.append(torch.from_numpy(normalise(crop, self.stats, cfg.standardise)))
        return {"views": views, "seed": int(rng.integers(2**62))}


def _single_threaded_worker(worker_id: int) -> None:
    """Loader workers run torch on one thread each: they are as many as the cores they share."""
    torch.set_num_threads(1)


def crop_loader(
    dataset: CropDataset,
    batch_sampler: torch.utils.data.Sampler,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches of ``dataset`` in the order of ``batch_sampler``, cut by ``num_workers`` worker processes (0: in
    this process), each reading its crops from the dataset's fields (for a
    :class:`~cellstudy.data.fieldstore.FieldStore` of a decoded store, memory maps opened in the worker).

    Each worker keeps :data:`PREFETCH_BATCHES` batches ready; ``pin_memory`` puts them in page-locked memory
    for asynchronous copies to a GPU. The batches are the same, bit for bit, whatever ``num_workers``: sample
    ``i`` depends only on ``(seed, i)``, and the loader returns batches in the sampler's order.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES if num_workers else None,
        worker_init_fn=_single_threaded_worker if num_workers else None,
    )


def load_fields(root: str | os.PathLike, layout: str = DEFAULT_LAYOUT) -> tuple[list[np.ndarray], list[str]]:
    """Read every field under ``root`` (recursively) into memory, in :data:`~cellstudy.data.images.CHANNELS` order.

    The fields are listed as field tables of channel layout ``layout``
    (:func:`~cellstudy.data.images.list_fields`) and read as a
    :class:`~cellstudy.data.fieldstore.FieldStore` reads them. Returns the
    ``(5, H, W)`` fields and their names ``"<folder>/<well>/f<field>"``.

    Raises
    ------
    FileNotFoundError
        No Phenix-named images under ``root``.
    ValueError
        ``layout`` is not a name in :data:`~cellstudy.data.images.CHANNEL_LAYOUTS`.
    """
    layout_channels(layout)  # an unknown name fails before the walk
    folders = sorted(
        {dirpath for dirpath, _, files in os.walk(root) if any(f.endswith((".tif", ".tiff")) for f in files)}
    )
    tables = [table for table in (list_fields(folder, layout) for folder in folders) if len(table)]
    if not tables:
        raise FileNotFoundError(f"no Phenix-named field images (rXXcXXfXXpXX-chN...tiff) under {root}")
    store = FieldStore(pd.concat(tables, ignore_index=True), progress=False)
    return [store[index] for index in tqdm(range(len(store)), desc="reading fields", unit="field")], store.names
