"""Classical CellProfiler-style profiles: segmentation, cp-measure features, median per well.

The baseline the learned encoders are compared with. Nuclei and cells are
segmented with :mod:`cellstudy.features.segmentation` (scikit-image, no models); the
cytoplasm is the cell minus its nucleus. Every measurement is made by
cp-measure, the stand-alone port of CellProfiler's measurement modules, on
intensities divided by 65535 as CellProfiler loads 16-bit images. Columns
follow CellProfiler's names, ``<Object>_<Category>_<Feature>[_<Channel>...]``
(``Cells_Intensity_MeanIntensity_DNA``, ``Nuclei_AreaShape_Area``,
``Cells_Texture_Contrast_ER_3_00_256``, ``Cells_Correlation_Correlation_DNA_ER``).
Features that only say where an object lies in the field (``Location_*``,
``AreaShape_Center_*``, ``AreaShape_BoundingBox{Minimum,Maximum}_*``) are left
out: they carry no morphology. A well's profile is the median over its cells,
as in the CPJUMP1 paper, plus the cell count.

Which families are measured, on which objects and channels, is set by
:class:`FeatureFamilies`; :data:`DEFAULT_FAMILIES` fits the simulated
benchmark (about 1,260 wells of 320 x 320 px) into a few minutes on two CPU cores
(measurements: book, Decisions and measurements).
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import cp_measure
import numpy as np
import pandas as pd
from cp_measure.bulk import get_core_measurements, get_correlation_measurements
from skimage.segmentation import relabel_sequential

from cellstudy.columns import CELL_COUNT, METADATA_PREFIX
from cellstudy.data.fieldstore import decoded_files, read_table_field
from cellstudy.data.images import CHANNELS, field_channel_maps
from cellstudy.features.segmentation import segment_cells, segment_nuclei
from cellstudy.parallel import map_with_progress

OBJECTS = ("Cells", "Nuclei", "Cytoplasm")
"""Object sets CellProfiler pipelines measure: whole cells, nuclei, and cells minus nuclei."""

UINT16_MAX = 65535
"""CellProfiler divides 16-bit intensities by this to put them in 0..1."""

CORRELATION_METHODS = tuple(get_correlation_measurements())
"""cp-measure's correlation measurements: ``costes``, ``pearson``, ``manders_fold``, ``rwc``."""

CORRELATION_OPTIONS = {"costes": {"scale_max": UINT16_MAX}}
"""Extra arguments per correlation method (Costes thresholds are searched on the 16-bit scale)."""

POSITION_FEATURE = re.compile(r"(Location_|Center_|BoundingBox(Minimum|Maximum)_)")
"""cp-measure keys that give an object's position in the field rather than its morphology."""

COUNT_COLUMNS = (CELL_COUNT, "Image_Count_Cells")
"""Well-level counts in a profile: total cells of the well (metadata) and cells per field (a feature)."""

ACCELERATOR = "numba" if importlib.util.find_spec("numba") else None
"""cp-measure backend: its numba kernels when numba is installed (the same features, several times
faster; measurements: book, Decisions and measurements), else its numpy code."""


def _measurements() -> tuple[dict, dict]:
    """cp-measure's core and correlation functions on the :data:`ACCELERATOR` backend.

    cp-measure selects its backend process-wide; it is set only while the
    functions are looked up and then put back to cp-measure's default.
    """
    cp_measure.set_accelerator(ACCELERATOR)
    try:
        return get_core_measurements(), get_correlation_measurements()
    finally:
        cp_measure.set_accelerator(None)


_CORE, _CORRELATION = _measurements()


@dataclass(frozen=True)
class FeatureFamilies:
    """Which CellProfiler measurement families to compute, on which objects and channels.

    An empty tuple of objects switches a family off. Object names are from
    :data:`OBJECTS`, channel names from :data:`cellstudy.data.images.CHANNELS`.

    Attributes
    ----------
    intensity_objects
        Objects whose intensity statistics (``Intensity_*``: integrated, mean,
        std, min, max, quartiles, MAD, mass displacement, and the same on the
        object's edge) are measured in every channel.
    shape_objects
        Objects whose size and shape (``AreaShape_*``: area, perimeter, axes,
        eccentricity, solidity, form factor, radii, Feret diameters, ...) are measured.
    zernike
        Also measure the shape's Zernike moments (``AreaShape_Zernike_n_m``, 30
        features up to order 9) on ``shape_objects``.
    texture_objects, texture_channels, texture_scales, texture_gray_levels
        Haralick texture (``Texture_<Feature>_<Channel>_<scale>_<direction>_<levels>``,
        13 features in 4 directions): objects, channels, pixel distances and
        grey levels (CellProfiler 3+ uses 256).
    granularity_objects, granularity_channels, granularity_spectrum_length, granularity_subsample
        Granularity spectrum (``Granularity_<k>_<Channel>``): objects, channels,
        number of opening steps and the image subsampling factor (CellProfiler's
        default 0.25 suits full-resolution 20x images; use about twice that for
        2 x 2 binned ones).
    correlation_objects, correlation_channels, correlation_methods
        Colocalisation between every pair of ``correlation_channels`` within
        each object, by the cp-measure methods named (see
        :data:`CORRELATION_METHODS`): ``pearson`` gives
        ``Correlation_Correlation_<A>_<B>`` and ``Correlation_Slope_<A>_<B>``.
    """

    intensity_objects: tuple[str, ...] = OBJECTS
    shape_objects: tuple[str, ...] = OBJECTS
    zernike: bool = False
    texture_objects: tuple[str, ...] = OBJECTS
    texture_channels: tuple[str, ...] = CHANNELS
    texture_scales: tuple[int, ...] = (3,)
    texture_gray_levels: int = 256
    granularity_objects: tuple[str, ...] = ()
    granularity_channels: tuple[str, ...] = CHANNELS
    granularity_spectrum_length: int = 16
    granularity_subsample: float = 0.25
    correlation_objects: tuple[str, ...] = ("Cells",)
    correlation_channels: tuple[str, ...] = CHANNELS
    correlation_methods: tuple[str, ...] = ("pearson",)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("intensity_objects", OBJECTS),
            ("shape_objects", OBJECTS),
            ("texture_objects", OBJECTS),
            ("granularity_objects", OBJECTS),
            ("correlation_objects", OBJECTS),
            ("texture_channels", CHANNELS),
            ("granularity_channels", CHANNELS),
            ("correlation_channels", CHANNELS),
            ("correlation_methods", CORRELATION_METHODS),
        ):
            unknown = sorted(set(getattr(self, name)) - set(allowed))
            if unknown:
                raise ValueError(f"FeatureFamilies.{name}: unknown {unknown}; choose from {list(allowed)}")

    @property
    def objects(self) -> tuple[str, ...]:
        """Objects any family measures, in :data:`OBJECTS` order."""
        used = {
            *self.intensity_objects,
            *self.shape_objects,
            *self.texture_objects,
            *self.granularity_objects,
            *self.correlation_objects,
        }
        return tuple(name for name in OBJECTS if name in used)


DEFAULT_FAMILIES = FeatureFamilies()
"""Intensity, size/shape and texture (scale 3, 256 grey levels) of cells, nuclei and
cytoplasm in all channels, and Pearson correlation of every channel pair within cells
(1,088 features). Zernike moments, granularity and the Manders, RWC and Costes
co-localisation measures are left out for their cost per field (measurements: book,
Decisions and measurements)."""


# --------------------------------------------------------------------------- one object set


def intensity_features(labels: np.ndarray, pixels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``Intensity_<Feature>_<Channel>`` of each object in every channel of ``pixels``."""
    return {
        f"{key}_{channel}": np.asarray(values, dtype=float)
        for channel, plane in pixels.items()
        for key, values in _CORE["intensity"](labels, plane).items()
        if not POSITION_FEATURE.match(key)
    }


def shape_features(labels: np.ndarray, zernike: bool) -> dict[str, np.ndarray]:
    """``AreaShape_<Feature>`` of each object (CellProfiler's basic set, Feret diameters, optionally Zernike)."""
    measures = [_CORE["sizeshape"](labels, None, calculate_advanced=False), _CORE["feret"](labels, None)]
    if zernike:
        measures.append(_CORE["zernike"](labels, None))
    return {
        f"AreaShape_{key}": np.asarray(values, dtype=float)
        for measure in measures
        for key, values in measure.items()
        if not POSITION_FEATURE.match(key)
    }


def texture_features(
    labels: np.ndarray, pixels: Mapping[str, np.ndarray], scales: Sequence[int], gray_levels: int
) -> dict[str, np.ndarray]:
    """``Texture_<Feature>_<Channel>_<scale>_<direction>_<levels>`` of each object (Haralick)."""
    features = {}
    for channel, plane in pixels.items():
        for scale in scales:
            for key, values in _CORE["texture"](labels, plane, scale=scale, gray_levels=gray_levels).items():
                feature, setting = key.split("_", 1)
                features[f"Texture_{feature}_{channel}_{setting}"] = np.asarray(values, dtype=float)
    return features


def granularity_features(
    labels: np.ndarray, pixels: Mapping[str, np.ndarray], spectrum_length: int, subsample: float
) -> dict[str, np.ndarray]:
    """``Granularity_<k>_<Channel>`` of each object."""
    return {
        f"{key}_{channel}": np.asarray(values, dtype=float)
        for channel, plane in pixels.items()
        for key, values in _CORE["granularity"](
            labels, plane, subsample_size=subsample, granular_spectrum_length=spectrum_length
        ).items()
    }


def correlation_name(key: str, first: str, second: str) -> str:
    """CellProfiler's name for cp-measure's correlation ``key`` between channels ``first`` and ``second``.

    ``Correlation_Pearson`` becomes ``Correlation_Correlation_<first>_<second>``;
    directional pairs ``Correlation_<X>_1`` / ``_2`` become
    ``Correlation_<X>_<first>_<second>`` / ``Correlation_<X>_<second>_<first>``
    (the share of the first channel's signal that overlaps the second, and back).
    """
    if key == "Correlation_Pearson":
        return f"Correlation_Correlation_{first}_{second}"
    stem, _, direction = key.rpartition("_")
    if direction == "1":
        return f"{stem}_{first}_{second}"
    if direction == "2":
        return f"{stem}_{second}_{first}"
    return f"{key}_{first}_{second}"


def pearson_by_object(first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """cp-measure's ``pearson`` measurement (``Correlation_Pearson``, ``Correlation_Slope`` of ``second`` on
    ``first``) for every object of dense ``labels`` (1..N, each present) at once, from per-object centred sums.

    Equal to cp-measure's per-object loop to about 1e-15 and faster (measurements: book, Decisions and
    measurements); it is the most frequent correlation call (one per channel pair). Objects of one
    pixel or constant intensity get NaN, as there.
    """
    flat = labels.ravel()
    inside = flat > 0
    index, n_bins = flat[inside], int(flat.max()) + 1
    x, y = first.ravel()[inside].astype(float), second.ravel()[inside].astype(float)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (np.bincount(index, x, n_bins) / count)[index]
        dy = y - (np.bincount(index, y, n_bins) / count)[index]
        sxx, syy, sxy = (np.bincount(index, weights, n_bins)[1:] for weights in (dx * dx, dy * dy, dx * dy))
        return {"Correlation_Pearson": sxy / np.sqrt(sxx * syy), "Correlation_Slope": sxy / sxx}


FAST_CORRELATION = {"pearson": pearson_by_object}
"""The project's vectorised versions of cp-measure correlation measurements (same values, tested against it)."""


def correlation_features(
    labels: np.ndarray, pixels: Mapping[str, np.ndarray], methods: Sequence[str]
) -> dict[str, np.ndarray]:
    """``Correlation_<Feature>_<A>_<B>`` of each object for every pair of channels in ``pixels``."""
    features = {}
    for first, second in itertools.combinations(pixels, 2):
        for method in methods:
            measure = FAST_CORRELATION.get(method, _CORRELATION[method])
            measured = measure(pixels[first], pixels[second], labels, **CORRELATION_OPTIONS.get(method, {}))
            for key, values in measured.items():
                features[correlation_name(key, first, second)] = np.asarray(values, dtype=float)
    return features


def measure_objects(
    labels: np.ndarray, pixels: Mapping[str, np.ndarray], name: str, families: FeatureFamilies
) -> pd.DataFrame:
    """Every feature ``families`` asks of object set ``name``, one row per label (index ``ObjectNumber``).

    ``labels`` may have gaps; columns are prefixed with ``name``.
    """
    dense, _, inverse = relabel_sequential(labels)
    numbers = np.asarray(inverse[np.arange(1, int(dense.max()) + 1)], dtype=int)

    def channels(selected: Sequence[str]) -> dict[str, np.ndarray]:
        return {channel: pixels[channel] for channel in selected}

    features: dict[str, np.ndarray] = {}
    if name in families.shape_objects:
        features |= shape_features(dense, families.zernike)
    if name in families.intensity_objects:
        features |= intensity_features(dense, pixels)
    if name in families.texture_objects:
        features |= texture_features(
            dense, channels(families.texture_channels), families.texture_scales, families.texture_gray_levels
        )
    if name in families.granularity_objects:
        features |= granularity_features(
            dense,
            channels(families.granularity_channels),
            families.granularity_spectrum_length,
            families.granularity_subsample,
        )
    if name in families.correlation_objects:
        features |= correlation_features(dense, channels(families.correlation_channels), families.correlation_methods)
    table = pd.DataFrame(features, index=pd.Index(numbers, name="ObjectNumber"))
    return table.add_prefix(f"{name}_")


# --------------------------------------------------------------------------- one field


def normalised_pixels(image: np.ndarray) -> dict[str, np.ndarray]:
    """Channel name -> float64 plane in 0..1 (the uint16 value divided by :data:`UINT16_MAX`)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(CHANNELS) or image.dtype != np.uint16:
        raise ValueError(
            f"expected a ({len(CHANNELS)}, H, W) uint16 image in {CHANNELS} order, "
            f"got shape {image.shape} dtype {image.dtype}"
        )
    return {channel: plane.astype(np.float64) / UINT16_MAX for channel, plane in zip(CHANNELS, image)}


def object_labels(cells: np.ndarray, nuclei: np.ndarray) -> dict[str, np.ndarray]:
    """Label images of :data:`OBJECTS`; the cytoplasm of a cell is its label outside its nucleus."""
    return {"Cells": cells, "Nuclei": nuclei, "Cytoplasm": np.where(nuclei > 0, 0, cells)}


def measure_field(
    image: np.ndarray,
    nuclei: np.ndarray | None = None,
    cells: np.ndarray | None = None,
    families: FeatureFamilies = DEFAULT_FAMILIES,
    nuclei_options: Mapping[str, float] | None = None,
    cell_options: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """CellProfiler features of every cell of one field, one row per cell.

    Parameters
    ----------
    image
        (5, H, W) uint16 field in :data:`cellstudy.data.images.CHANNELS` order.
    nuclei, cells
        Label images; segmented when not given (cells need their nuclei). A
        cell and its nucleus share a label, as :func:`cellstudy.features.segmentation.segment_cells` makes them.
    families
        What to measure.
    nuclei_options, cell_options
        Keyword arguments of :func:`cellstudy.features.segmentation.segment_nuclei` and
        :func:`cellstudy.features.segmentation.segment_cells` (segmentation only).

    Returns
    -------
    Frame indexed by the cell label (``ObjectNumber``) with :func:`feature_names` columns;
    a nucleus or cytoplasm feature is NaN for a cell without one. No rows when the field has no cells.
    """
    pixels = normalised_pixels(image)
    if cells is not None and nuclei is None:
        raise ValueError("cells were given without their nuclei; pass both label images or neither")
    if nuclei is None:
        nuclei = segment_nuclei(image[CHANNELS.index("DNA")], **(nuclei_options or {}))
    if cells is None:
        cells = segment_cells(image, nuclei, **(cell_options or {}))
    for name, labels in (("nuclei", nuclei), ("cells", cells)):
        if labels.shape != image.shape[1:]:
            raise ValueError(f"{name} labels have shape {labels.shape}, the image {image.shape[1:]}")
    numbers = pd.Index(np.unique(cells[cells > 0]), name="ObjectNumber")
    columns = feature_names(families)
    if numbers.empty:
        return pd.DataFrame(columns=columns, index=numbers, dtype=float)
    labels = object_labels(cells, nuclei)
    tables = [
        measure_objects(labels[name], pixels, name, families).reindex(numbers)
        for name in families.objects
        if labels[name].any()
    ]
    return pd.concat(tables, axis=1).reindex(columns=columns)


def probe_field(
    size: int = 48, cell_radius: float = 16.0, nucleus_radius: float = 7.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-cell field (image, nuclei, cells) with textured stains, for listing feature names."""
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - size / 2, xx - size / 2)
    cells = (distance <= cell_radius).astype(np.int32)
    nuclei = (distance <= nucleus_radius).astype(np.int32)
    ripples = [np.sin(xx / (channel + 1.5)) * np.cos(yy / (channel + 2.5)) for channel in range(len(CHANNELS))]
    image = np.stack([cells * (20000 + 10000 * ripple) + 500 for ripple in ripples]).astype(np.uint16)
    return image, nuclei, cells


@cache
def feature_names(families: FeatureFamilies = DEFAULT_FAMILIES) -> list[str]:
    """Feature columns :func:`measure_field` returns for ``families``, as cp-measure names them on a probe cell."""
    image, nuclei, cells = probe_field()
    labels = object_labels(cells, nuclei)
    pixels = normalised_pixels(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined values on the probe are irrelevant: only names are kept
        return [
            column
            for name in families.objects
            for column in measure_objects(labels[name], pixels, name, families).columns
        ]


# --------------------------------------------------------------------------- wells


def well_profile(objects: pd.DataFrame, n_fields: int = 1, agg: str = "median") -> pd.Series:
    """One well's profile from the cells of its ``n_fields`` fields.

    Returns ``Metadata_Count_Cells`` (cells in the well), ``Image_Count_Cells``
    (cells per field, a feature as in CellProfiler profiles) and the ``agg``
    (``"median"`` as in the CPJUMP1 paper, or ``"mean"``) of every column over
    the cells, ignoring NaN; NaN where the well has no cell with a value.
    """
    if agg not in ("median", "mean"):
        raise ValueError(f"agg must be 'median' or 'mean', got {agg!r}")
    if n_fields < 1:
        raise ValueError(f"n_fields must be at least 1, got {n_fields}")
    counts = pd.Series([len(objects), len(objects) / n_fields], index=list(COUNT_COLUMNS), dtype=float)
    return pd.concat([counts, objects.astype(float).agg(agg)])


class _WellTask(NamedTuple):
    """Everything a worker needs to profile one well."""

    folder: str
    well: str
    fields: tuple[int, ...]
    channel_maps: tuple[Mapping[str, int], ...]
    decoded: tuple[str | None, ...]
    families: FeatureFamilies
    agg: str
    nuclei_options: dict[str, float]
    cell_options: dict[str, object]


def _profile_well(task: _WellTask) -> pd.Series:
    """Read, segment and measure every field of one well; its :func:`well_profile`."""
    tables = []
    for field, channel_map, decoded in zip(task.fields, task.channel_maps, task.decoded):
        image = read_table_field(task.folder, task.well, field, channel_map, decoded)
        try:
            tables.append(
                measure_field(
                    image, families=task.families, nuclei_options=task.nuclei_options, cell_options=task.cell_options
                )
            )
        except ValueError as error:
            raise ValueError(f"well {task.well} field {field} in {task.folder}: {error}") from error
    return well_profile(pd.concat(tables), n_fields=len(task.fields), agg=task.agg)


def _well_tasks(
    field_table: pd.DataFrame,
    families: FeatureFamilies,
    agg: str,
    nuclei_options: Mapping[str, float] | None,
    cell_options: Mapping[str, object] | None,
) -> tuple[list[_WellTask], pd.DataFrame]:
    """One task per (folder, well) in order of first appearance, and the wells' ``Metadata_*`` rows.

    Each field keeps its row's channel layout (:func:`cellstudy.data.images.field_channel_maps`).
    """
    missing = sorted({"folder", "well", "field"} - set(field_table.columns))
    if missing:
        raise KeyError(f"field table lacks column(s) {missing}")
    metadata_columns = [column for column in field_table.columns if column.startswith(METADATA_PREFIX)]
    tasks = []
    for (folder, well), group in field_table.groupby(["folder", "well"], sort=False):
        if len(group[metadata_columns].drop_duplicates()) > 1:
            raise ValueError(f"well {well} in {folder}: its fields disagree on {metadata_columns}")
        tasks.append(
            _WellTask(
                str(folder),
                well,
                tuple(int(field) for field in group["field"]),
                tuple(field_channel_maps(group)),
                tuple(decoded_files(group)),
                families,
                agg,
                dict(nuclei_options or {}),
                dict(cell_options or {}),
            )
        )
    metadata = field_table.drop_duplicates(["folder", "well"])[metadata_columns]
    return tasks, metadata.reset_index(drop=True)


def profile_fields(
    field_table: pd.DataFrame,
    n_workers: int = 2,
    families: FeatureFamilies = DEFAULT_FAMILIES,
    agg: str = "median",
    nuclei_options: Mapping[str, float] | None = None,
    cell_options: Mapping[str, object] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Classical profiles of wells, one row per well.

    Parameters
    ----------
    field_table
        One row per field with ``folder``, ``well``, ``field``, any ``Metadata_*`` columns
        (equal within a well) and optionally the channel layout (:data:`cellstudy.data.images.LAYOUT`).
        A well is a (folder, well) pair.
    n_workers
        Processes measuring wells (1: in this process); the result does not depend on it.
    families, agg, nuclei_options, cell_options
        As :func:`measure_field` and :func:`well_profile`.
    progress
        Show a progress bar.

    Returns
    -------
    ``Metadata_*`` columns, then :data:`COUNT_COLUMNS`, then :func:`feature_names`,
    wells in order of first appearance in ``field_table``. A well without cells
    gets NaN features, count 0 and a warning naming it.
    """
    tasks, metadata = _well_tasks(field_table, families, agg, nuclei_options, cell_options)
    profiles = map_with_progress(_profile_well, tasks, n_workers, "classical features", "well", progress)
    empty = [f"{task.well} ({task.folder})" for task, profile in zip(tasks, profiles) if profile[COUNT_COLUMNS[0]] == 0]
    if empty:
        warnings.warn(f"no cells found in well(s) {', '.join(empty)}: their features are NaN", stacklevel=2)
    features = pd.DataFrame(profiles, columns=[*COUNT_COLUMNS, *feature_names(families)]).reset_index(drop=True)
    return pd.concat([metadata, features], axis=1)
