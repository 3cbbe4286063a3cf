"""Embedding stage: fields -> tiles -> features per tile -> one profile per well.

Every field of a field table is read, cut into non-overlapping square tiles at
native resolution (a centred grid, :func:`tile_grid`), and the tiles that fail
the training crops' cell-content filter (:mod:`cellstudy.training.crops`: at least
``min_cell_fraction`` of the pixels brighter than ``otsu_factor`` x the
field's DNA Otsu threshold) are dropped. The rest are normalised exactly as in
training (the channel statistics and crop settings stored with the encoder),
turned into features in batches that run across field boundaries, and averaged
per well.

Features come from a :class:`Featuriser`:

- :func:`encoder_featuriser`: a ViT's pooled output. DINO: the teacher's class
  token (as Caron et al. evaluate it); MAE: the mean of the patch tokens with
  the encoder run on all patches (He et al.'s linear probe uses the class
  token, but MAE never trains it; the mean is the usual feature);
- the same encoder at random initialisation (:func:`random_init_encoder`), the
  baseline that isolates what pre-training adds;
- :func:`pixel_statistics_featuriser`: per-channel mean, standard deviation and
  percentiles of the normalised tiles, the baseline that needs no model at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cellstudy.columns import FIELD, METADATA_PREFIX, N_TILES, TILE_X, TILE_Y
from cellstudy.data.fieldstore import FIELD_KEY, FieldStore
from cellstudy.data.images import CHANNELS
from cellstudy.models.vit import EncoderConfig, ViTEncoder, build_encoder
from cellstudy.training.crops import ChannelStats, CropConfig, cell_threshold, normalise
from cellstudy.training.train import PretrainedEncoder, load_encoder

EMBEDDING_PREFIX = "emb_"
"""Column prefix of encoder features (``emb_0000``, ``emb_0001``, ...)."""
PIXEL_PREFIX = "pix_"
"""Column prefix of pixel-statistics features (``pix_DNA_mean``, ...)."""
POOLINGS = ("cls", "mean")
"""Token pooling: the class token, or the mean of the patch tokens."""
DEFAULT_POOLING = {"dino": "cls", "mae": "mean"}
"""Pooling per pre-training method (DINO trains its class token; MAE does not)."""
PIXEL_PERCENTILES = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)
"""Percentiles of each channel in the pixel-statistics baseline."""
TILE_COLUMNS = (FIELD, TILE_Y, TILE_X)
"""Extra metadata of per-tile output: field number and the tile's top-left corner."""


class Featuriser(NamedTuple):
    """Turns a batch of normalised tiles ``(B, C, s, s)`` into features ``(B, D)``, named by ``columns``."""

    features: Callable[[np.ndarray], np.ndarray]
    columns: list[str]


def tile_grid(height: int, width: int, size: int) -> np.ndarray:
    """Top-left corners ``(N, 2)`` of the non-overlapping ``size`` tiles of a centred grid, row-major.

    ``N = (height // size) * (width // size)``; the margin left over (less than
    one tile) is split evenly between the two sides.

    Raises
    ------
    ValueError
        The field is smaller than one tile.
    """
    rows, cols = height // size, width // size
    if rows == 0 or cols == 0:
        raise ValueError(f"a {height}x{width} px field holds no {size} px tile")
    top, left = (height - rows * size) // 2, (width - cols * size) // 2
    yy, xx = np.meshgrid(top + size * np.arange(rows), left + size * np.arange(cols), indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def cut_tiles(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """All tiles ``(N, C, size, size)`` of :func:`tile_grid` over a ``(C, H, W)`` image, and their corners."""
    corners = tile_grid(image.shape[1], image.shape[2], size)
    (top, left), (bottom, right) = corners[0], corners[-1] + size
    rows, cols = (bottom - top) // size, (right - left) // size
    blocks = image[:, top:bottom, left:right].reshape(image.shape[0], rows, size, cols, size)
    return blocks.transpose(1, 3, 0, 2, 4).reshape(rows * cols, image.shape[0], size, size), corners


def cell_tiles(image: np.ndarray, size: int, crops: CropConfig) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of ``image`` that pass the cell-content filter of ``crops``, and their corners.

    As in training, a field where no tile passes keeps its one tile with the most
    cell pixels, so that every field (and well) gets a profile.
    """
    tiles, corners = cut_tiles(image, size)
    threshold = cell_threshold(image[crops.dna_channel], crops.otsu_factor)
    fractions = (tiles[:, crops.dna_channel] > threshold).mean(axis=(1, 2))
    keep = fractions >= crops.min_cell_fraction
    if not keep.any():
        keep[np.argmax(fractions)] = True
    return tiles[keep], corners[keep]


def encoder_featuriser(encoder: ViTEncoder, pooling: str) -> Featuriser:
    """Pooled output tokens of ``encoder`` (in eval mode, on its own device), ``emb_0000``... columns."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    device = next(encoder.parameters()).device
    encoder.eval()

    @torch.inference_mode()
    def features(tiles: np.ndarray) -> np.ndarray:
        cls, mean = encoder.pooled_features(torch.from_numpy(tiles).to(device))
        return (cls if pooling == "cls" else mean).float().cpu().numpy()

    return Featuriser(features, [f"{EMBEDDING_PREFIX}{i:04d}" for i in range(encoder.embed_dim)])


def pixel_statistics_featuriser(
    percentiles: Sequence[float] = PIXEL_PERCENTILES, channels: Sequence[str] = CHANNELS
) -> Featuriser:
    """Per channel of each tile: mean, standard deviation and ``percentiles`` of the normalised pixels."""
    names = ["mean", "std", *(f"p{p:g}" for p in percentiles)]

    def features(tiles: np.ndarray) -> np.ndarray:
        flat = tiles.reshape(tiles.shape[0], tiles.shape[1], -1).astype(np.float64)
        stats = [flat.mean(axis=-1), flat.std(axis=-1), *np.percentile(flat, percentiles, axis=-1)]
        return np.stack(stats, axis=-1).reshape(tiles.shape[0], -1)

    return Featuriser(features, [f"{PIXEL_PREFIX}{channel}_{name}" for channel in channels for name in names])


def combine_featurisers(featurisers: Mapping[str, Featuriser]) -> Featuriser:
    """One featuriser running several on the same tiles; columns ``<name>/<column>`` (see :func:`split_features`)."""

    def features(tiles: np.ndarray) -> np.ndarray:
        return np.concatenate([featuriser.features(tiles) for featuriser in featurisers.values()], axis=1)

    columns = [f"{name}/{column}" for name, featuriser in featurisers.items() for column in featuriser.columns]
    return Featuriser(features, columns)


def split_features(table: pd.DataFrame, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The output of a :func:`combine_featurisers` run as one table per featuriser, with the original columns."""
    metadata = [column for column in table.columns if "/" not in str(column)]
    return {
        name: pd.concat(
            [table[metadata], table.filter(like=f"{name}/").rename(columns=lambda c: c.split("/", 1)[1])], axis=1
        )
        for name in names
    }


def random_init_encoder(
    path: str | os.PathLike, seed: int = 0, device: str | torch.device = "cpu"
) -> PretrainedEncoder:
    """The architecture of the encoder saved at ``path`` with fresh random weights drawn with ``seed``.

    With the training run's seed (0 by default) these are the very weights its
    pre-training started from. Channel statistics, crop settings and ``method``
    (hence the pooling) are the saved encoder's; ``step`` is 0. The global random
    state is left untouched.
    """
    config = torch.load(path, map_location="cpu", weights_only=True)["encoder_config"]
    with torch.random.fork_rng(devices=[]):
        pretrained = load_encoder(path, device)
        torch.manual_seed(seed)
        encoder = build_encoder(EncoderConfig(**config))
    return pretrained._replace(encoder=encoder.to(device).eval(), step=0)


def read_fields(fields: pd.DataFrame, progress: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """The ``(5, H, W)`` images of a field table's rows, and names ``"<folder>/<well>/f<field>"`` for messages.

    Each row is read as a :class:`~cellstudy.data.fieldstore.FieldStore` reads it: from its decoded file where
    the table names one, else from its TIFFs in its channel layout.
    """
    store = FieldStore(fields, progress=False)
    rows = tqdm(range(len(store)), desc="reading fields", unit="field", disable=not progress)
    return [np.array(store[row]) for row in rows], store.names


class _Tiles(NamedTuple):
    """The filtered tiles of one field (raw or normalised) and where they come from."""

    row: int
    tiles: np.ndarray
    corners: np.ndarray


def field_tiles(
    fields: pd.DataFrame,
    stats: ChannelStats | None,
    crops: CropConfig,
    size: int,
    max_tiles_per_field: int | None,
    seed: int,
    progress: bool,
) -> Iterator[_Tiles]:
    """Read every field of the table (as a :class:`~cellstudy.data.fieldstore.FieldStore` reads it) and yield its
    filtered tiles, normalised (float32) with ``stats`` as in training, or as they are in the field (uint16) where
    ``stats`` is ``None``.

    At most ``max_tiles_per_field`` tiles of a field are kept.
    """
    store = FieldStore(fields, progress=False)
    for row, (folder, well, field) in enumerate(
        tqdm(
            fields[list(FIELD_KEY)].itertuples(index=False),
            total=len(fields),
            desc="embedding fields",
            unit="field",
            disable=not progress,
        )
    ):
        image = store[row]
        try:
            tiles, corners = cell_tiles(image, size, crops)
        except ValueError as error:
            raise ValueError(f"well {well} field {field} in {folder}: {error}") from error
        if max_tiles_per_field is not None and len(tiles) > max_tiles_per_field:
            chosen = np.sort(np.random.default_rng([seed, row]).choice(len(tiles), max_tiles_per_field, replace=False))
            tiles, corners = tiles[chosen], corners[chosen]
        yield _Tiles(row, tiles if stats is None else normalise(tiles, stats, crops.standardise), corners)


def featurise_in_batches(
    chunks: Iterable[np.ndarray], features: Callable[[np.ndarray], np.ndarray], batch_size: int
) -> Iterator[np.ndarray]:
    """Features of the rows of a stream of arrays, computed ``batch_size`` rows at a time across chunk boundaries."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pending: list[np.ndarray] = []
    for chunk in chunks:
        pending.append(chunk)
        if sum(len(part) for part in pending) >= batch_size:
            stacked = np.concatenate(pending)
            full = len(stacked) - len(stacked) % batch_size
            for start in range(0, full, batch_size):
                yield features(stacked[start : start + batch_size])
            pending = [stacked[full:]]
    rest = [part for part in pending if len(part)]
    if rest:
        yield features(np.concatenate(rest))


def _metadata_columns(fields: pd.DataFrame) -> list[str]:
    return [column for column in fields.columns if str(column).startswith(METADATA_PREFIX)]


def _well_means(fields: pd.DataFrame, tiles: pd.DataFrame, tile_wells: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Mean of the tile features per well (``tile_wells``: index of each tile's well among the table's wells).

    Wells are (folder, well) pairs in order of first appearance.
    """
    wells = fields.drop_duplicates(["folder", "well"]).reset_index(drop=True)
    means = tiles[columns].groupby(tile_wells).mean()
    metadata = wells[_metadata_columns(fields)].assign(**{N_TILES: np.bincount(tile_wells, minlength=len(wells))})
    return pd.concat([metadata, means.reset_index(drop=True)], axis=1)


def embed_fields(
    fields: pd.DataFrame,
    featuriser: Featuriser,
    stats: ChannelStats,
    crops: CropConfig,
    *,
    tile_size: int | None = None,
    batch_size: int = 64,
    max_tiles_per_field: int | None = None,
    seed: int = 0,
    per_tile: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Features of every well (or tile) of a field table.

    Parameters
    ----------
    fields
        One row per field: ``folder``, ``well``, ``field`` and ``Metadata_*``
        columns (equal within a well; give tables without them, like the real
        sample fields, at least ``Metadata_Well``), and optionally the channel layout
        (:data:`cellstudy.data.images.LAYOUT`). A well is a (folder, well) pair.
    featuriser
        Tiles -> features (:func:`encoder_featuriser`, :func:`pixel_statistics_featuriser`).
    stats, crops
        Normalisation statistics and crop settings (cell filter, standardisation)
        of the training run, as stored with the encoder.
    tile_size
        Tile side in pixels; default ``crops.global_size`` (the training crop).
    batch_size
        Tiles per featuriser call; the result does not depend on it.
    max_tiles_per_field
        Keep at most this many of a field's filtered tiles, drawn at random with
        ``seed`` (the draw depends only on the seed and the field's row), to
        embed large screens quickly; ``None`` keeps all.
    seed
        Seed of that draw.
    per_tile
        Return one row per tile instead of the mean per well.
    progress
        Show a progress bar over fields.

    Returns
    -------
    Per well (order of first appearance): the ``Metadata_*`` columns, :data:`N_TILES`
    and the mean features. Per tile: the field's ``Metadata_*`` columns, :data:`TILE_COLUMNS` and the features.
    """
    missing = sorted(set(FIELD_KEY) - set(fields.columns))
    if missing:
        raise KeyError(f"field table lacks column(s) {missing}")
    fields = fields.reset_index(drop=True)
    size = tile_size or crops.global_size
    origins: list[_Tiles] = []

    def tiles_of_each_field() -> Iterator[np.ndarray]:
        for item in field_tiles(fields, stats, crops, size, max_tiles_per_field, seed, progress):
            origins.append(item._replace(tiles=None))
            yield item.tiles

    batches = list(featurise_in_batches(tiles_of_each_field(), featuriser.features, batch_size))
    values = np.concatenate(batches) if batches else np.empty((0, len(featuriser.columns)))
    rows = np.concatenate([np.full(len(item.corners), item.row) for item in origins]).astype(int)
    corners = np.concatenate([item.corners for item in origins]).reshape(-1, 2)
    tiles = pd.concat(
        [
            fields.loc[rows, _metadata_columns(fields)].reset_index(drop=True),
            pd.DataFrame(dict(zip(TILE_COLUMNS, [fields.loc[rows, "field"].to_numpy(), corners[:, 0], corners[:, 1]]))),
            pd.DataFrame(values, columns=featuriser.columns),
        ],
        axis=1,
    )
    if per_tile:
        return tiles
    field_wells = fields.groupby(["folder", "well"], sort=False).ngroup().to_numpy()
    return _well_means(fields, tiles, field_wells[rows], featuriser.columns)


def embed(model: PretrainedEncoder, fields: pd.DataFrame, pooling: str | None = None, **options) -> pd.DataFrame:
    """:func:`embed_fields` with a (pre-trained or random) encoder, normalised as in its training.

    ``pooling`` defaults to :data:`DEFAULT_POOLING` of ``model.method``; ``options``
    are those of :func:`embed_fields`.
    """
    featuriser = encoder_featuriser(model.encoder, pooling or DEFAULT_POOLING[model.method])
    return embed_fields(fields, featuriser, model.stats, model.crops, **options)


def pixel_profiles(
    fields: pd.DataFrame,
    stats: ChannelStats,
    crops: CropConfig,
    percentiles: Sequence[float] = PIXEL_PERCENTILES,
    **options,
) -> pd.DataFrame:
    """The pixel-statistics baseline: :func:`embed_fields` with :func:`pixel_statistics_featuriser`."""
    return embed_fields(fields, pixel_statistics_featuriser(percentiles), stats, crops, **options)
