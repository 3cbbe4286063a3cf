"""Read and write 5-channel Cell Painting fields of view.

Fields are stored as the Cell Painting Gallery stores Phenix exports: one
16-bit grey-scale TIFF per channel, named ``rRRcCCfFFpPP-chNsk1fk1fl1.tiff``
(row, column, field, plane, channel). Which channel number holds which stain
differs between sources, so channels are always selected by name through a
channel map (stain name -> channel number), and every reader returns the
stains in the study's fixed order :data:`CHANNELS`.

The readers of one field take a channel map. A field table (one row per field,
see :mod:`cellstudy.data.fieldstore`) names each row's map instead, in the
optional :data:`LAYOUT` column: a key of :data:`CHANNEL_LAYOUTS`, and
:data:`DEFAULT_LAYOUT` (CPJUMP1) where the column or a value is missing
(:func:`field_channel_maps`).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import tifffile

from cellstudy.files import atomic_path

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
"""The study's channel order: every image array is (5, H, W) in this order."""

CPJUMP1_CHANNELS = {"Mito": 1, "AGP": 2, "RNA": 3, "ER": 4, "DNA": 5}
"""CPJUMP1 (cpg0000) channel numbers; also the layout :func:`write_field` uses."""

DAOY_CHANNELS = {"ER": 2, "AGP": 3, "Mito": 4, "DNA": 5, "RNA": 6}
"""Pediatric cancer atlas (DAOY) channel numbers; ch1 is brightfield and unused."""

CHANNEL_LAYOUTS = {"cpjump1": CPJUMP1_CHANNELS, "daoy": DAOY_CHANNELS}
"""Channel maps by layout name, the values of a field table's :data:`LAYOUT` column."""

LAYOUT = "channel_layout"
"""Optional field-table column: the name of each field's channel layout in :data:`CHANNEL_LAYOUTS`."""

DEFAULT_LAYOUT = "cpjump1"
"""The layout of a field-table row without one (no :data:`LAYOUT` column, or no value in it)."""

CHANNEL_COLOURS = {
    "DNA": (0.0, 0.35, 1.0),
    "ER": (0.0, 1.0, 0.0),
    "RNA": (0.0, 0.8, 0.8),
    "AGP": (1.0, 0.45, 0.0),
    "Mito": (1.0, 0.0, 1.0),
}
"""RGB colour of each stain in :func:`composite_rgb` (blue, green, cyan, orange, magenta)."""

_NAME_PATTERN = re.compile(r"r(\d{2})c(\d{2})f(\d{2})p(\d{2})-ch(\d+)sk1fk1fl1\.tiff?")
_WELL_PATTERN = re.compile(r"([A-Z])(\d{1,2})")
_TIFF_READ_ERRORS = (ValueError, RuntimeError, OSError, EOFError, struct.error)
"""What tifffile and imagecodecs raise on corrupt files (TiffFileError is a ValueError)."""


class FieldKey(NamedTuple):
    """One field of view of one well."""

    row: int
    col: int
    field: int


class PhenixName(NamedTuple):
    """The parts of a Phenix image file name."""

    row: int
    col: int
    field: int
    plane: int
    channel: int


def parse_name(name: str) -> PhenixName:
    """Split a Phenix file name (``r04c14f05p01-ch5sk1fk1fl1.tiff``) into its numbers."""
    match = _NAME_PATTERN.fullmatch(Path(name).name)
    if match is None:
        raise ValueError(f"{name!r} is not a Phenix image name like 'r04c14f05p01-ch5sk1fk1fl1.tiff'")
    return PhenixName(*(int(part) for part in match.groups()))


def phenix_name(row: int, col: int, field: int, channel: int, plane: int = 1) -> str:
    """The Phenix file name of one channel of one field, e.g. ``r04c14f05p01-ch5sk1fk1fl1.tiff``."""
    return f"r{row:02d}c{col:02d}f{field:02d}p{plane:02d}-ch{channel}sk1fk1fl1.tiff"


def well_id(row: int, col: int) -> str:
    """Well name from 1-based row and column numbers: ``well_id(4, 14) == "D14"``."""
    if not 1 <= row <= 26 or col < 1:
        raise ValueError(f"no well name for row {row}, column {col} (rows 1-26, columns >= 1)")
    return f"{chr(ord('A') + row - 1)}{col:02d}"


def parse_well(well: str) -> tuple[int, int]:
    """1-based (row, column) of a well name: ``parse_well("D14") == (4, 14)``."""
    match = _WELL_PATTERN.fullmatch(well.strip().upper())
    if match is None or int(match.group(2)) < 1:
        raise ValueError(f"{well!r} is not a well name like 'D14'")
    return ord(match.group(1)) - ord("A") + 1, int(match.group(2))


def layout_channels(layout: str) -> Mapping[str, int]:
    """The channel map (stain name -> channel number) of a layout named in :data:`CHANNEL_LAYOUTS`.

    Raises
    ------
    ValueError
        ``layout`` is not a known layout (the message names it and the known ones).
    """
    if layout not in CHANNEL_LAYOUTS:
        raise ValueError(f"unknown channel layout {layout!r}; known layouts: {sorted(CHANNEL_LAYOUTS)}")
    return CHANNEL_LAYOUTS[layout]


def field_channel_maps(fields: pd.DataFrame) -> list[Mapping[str, int]]:
    """The channel map of each row of a field table, from its :data:`LAYOUT` column.

    A table without the column, or a row without a value in it, has the
    :data:`DEFAULT_LAYOUT`.

    Raises
    ------
    ValueError
        A row names an unknown layout (as :func:`layout_channels`).
    """
    if LAYOUT not in fields.columns:
        return [CHANNEL_LAYOUTS[DEFAULT_LAYOUT]] * len(fields)
    return [layout_channels(DEFAULT_LAYOUT if pd.isna(layout) else layout) for layout in fields[LAYOUT]]


def with_layout(fields: pd.DataFrame, layout: str) -> pd.DataFrame:
    """A field table with ``layout`` as the :data:`LAYOUT` of every row that names none.

    A table without the column gets one only for a layout other than
    :data:`DEFAULT_LAYOUT`, which a missing column already means.

    Raises
    ------
    ValueError
        ``layout`` is unknown (as :func:`layout_channels`).
    """
    layout_channels(layout)
    if LAYOUT in fields.columns:
        return fields.assign(**{LAYOUT: [layout if pd.isna(given) else given for given in fields[LAYOUT]]})
    return fields if layout == DEFAULT_LAYOUT else fields.assign(**{LAYOUT: layout})


def tiff_bytes(fields: pd.DataFrame) -> int:
    """Bytes on disk of the five channel TIFFs of every row of a field table (``folder``, ``well``, ``field``), each
    row in its channel layout (:func:`field_channel_maps`).
    """
    rows = fields[["folder", "well", "field"]].itertuples(index=False)
    return sum(
        path.stat().st_size
        for (folder, well, field), channel_map in zip(rows, field_channel_maps(fields))
        for path in channel_paths(folder, well, int(field), channel_map)
    )


def list_fields(folder: str | os.PathLike, layout: str = DEFAULT_LAYOUT) -> pd.DataFrame:
    """One row per field of view found in ``folder``, a field table of channel layout ``layout``.

    Columns: ``row, col, well, field, folder, channels`` where ``channels`` is
    the sorted tuple of channel numbers present, and :data:`LAYOUT` for a
    layout other than :data:`DEFAULT_LAYOUT` (:func:`with_layout`). Files whose
    names are not Phenix names are ignored.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        ``layout`` is unknown.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    found: dict[FieldKey, list[int]] = {}
    for path in folder.iterdir():
        if _NAME_PATTERN.fullmatch(path.name):
            name = parse_name(path.name)
            found.setdefault(FieldKey(name.row, name.col, name.field), []).append(name.channel)
    rows = [
        {
            "row": key.row,
            "col": key.col,
            "well": well_id(key.row, key.col),
            "field": key.field,
            "folder": str(folder),
            "channels": tuple(sorted(channels)),
        }
        for key, channels in sorted(found.items())
    ]
    return with_layout(pd.DataFrame(rows, columns=["row", "col", "well", "field", "folder", "channels"]), layout)


def channel_paths(
    folder: str | os.PathLike, well: str, field: int, channel_map: Mapping[str, int] = CPJUMP1_CHANNELS
) -> list[Path]:
    """Paths of the five channel files of a field, in :data:`CHANNELS` order."""
    missing = [name for name in CHANNELS if name not in channel_map]
    if missing:
        raise KeyError(f"channel map {dict(channel_map)} lacks stain(s) {missing}")
    row, col = parse_well(well)
    return [Path(folder) / phenix_name(row, col, field, channel_map[name]) for name in CHANNELS]


def read_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a single-page uint16 TIFF, raising an error that names the file if it is not one.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is truncated or corrupt, has more than one page (one channel
        per file is expected; the message gives the page count), or its pixels
        are not uint16.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing image file {path}")
    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.pages:
                raise ValueError("no readable image page")
            # A stack would otherwise pass as its first page, i.e. as one channel.
            if len(tiff.pages) > 1:
                raise ValueError(f"file has {len(tiff.pages)} pages, expected one (one channel per file)")
            page = tiff.pages.first
            if page.dtype != np.uint16:
                raise ValueError(f"pixel type is {page.dtype}, expected uint16")
            _check_complete(page, path.stat().st_size)
            return page.asarray()
    except _TIFF_READ_ERRORS as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _check_complete(page: tifffile.TiffPage, file_size: int) -> None:
    """Raise if any strip or tile of ``page`` lies beyond the end of the file (truncation)."""
    data_end = max((offset + count for offset, count in zip(page.dataoffsets, page.databytecounts)), default=0)
    if data_end > file_size:
        raise ValueError(f"file is truncated: image data ends at byte {data_end}, file has {file_size}")


def read_field(
    folder: str | os.PathLike, well: str, field: int = 5, channel_map: Mapping[str, int] = CPJUMP1_CHANNELS
) -> np.ndarray:
    """Read one field of view as a (5, H, W) uint16 array in :data:`CHANNELS` order.

    Parameters
    ----------
    folder
        Folder holding the Phenix-named TIFFs.
    well
        Well name, e.g. ``"D14"``.
    field
        Field (site) number within the well.
    channel_map
        Stain name -> channel number for this source, e.g. :data:`CPJUMP1_CHANNELS`.
    """
    paths = channel_paths(folder, well, field, channel_map)
    planes = [read_tiff(path) for path in paths]
    for path, plane in zip(paths, planes):
        if plane.shape != planes[0].shape:
            raise ValueError(f"{path} has shape {plane.shape}, but {paths[0]} has {planes[0].shape}")
    return np.stack(planes)


def write_tiff(path: str | os.PathLike, plane: np.ndarray) -> None:
    """Write a 2-D uint16 array as an LZW-compressed TIFF, atomically (temp file + rename)."""
    with atomic_path(path) as temp_path:
        tifffile.imwrite(temp_path, plane, compression="lzw", photometric="minisblack")


def write_field(
    folder: str | os.PathLike,
    well: str,
    field: int,
    image: np.ndarray,
    channel_map: Mapping[str, int] = CPJUMP1_CHANNELS,
) -> list[Path]:
    """Write a (5, H, W) uint16 image in :data:`CHANNELS` order as five Phenix-named TIFFs.

    Returns the written paths in :data:`CHANNELS` order; :func:`read_field` with
    the same arguments reads the image back unchanged.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(CHANNELS) or image.dtype != np.uint16:
        raise ValueError(
            f"well {well} field {field}: expected a ({len(CHANNELS)}, H, W) uint16 image, "
            f"got shape {image.shape} dtype {image.dtype}"
        )
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = channel_paths(folder, well, field, channel_map)
    for path, plane in zip(paths, image):
        write_tiff(path, plane)
    return paths


def read_zarr_sites(path: str | os.PathLike) -> np.ndarray:
    """Read a Zarr crop store (as in ``extra_images/jump_cpg0016_RAB30_zarr``).

    ``path`` holds ``images.zarr`` (a group with the array ``images`` of shape
    (site, channel, y, x)) and ``channels.csv`` (columns ``idx, channel`` naming
    each channel index). Returns (n_sites, 5, H, W) in :data:`CHANNELS` order.
    """
    import zarr

    path = Path(path)
    channels = pd.read_csv(path / "channels.csv").set_index("channel")["idx"]
    missing = [name for name in CHANNELS if name not in channels.index]
    if missing:
        raise KeyError(f"{path / 'channels.csv'} lacks stain(s) {missing}")
    array = zarr.open_array(path / "images.zarr" / "images", mode="r")
    return np.asarray(array[:, [int(channels[name]) for name in CHANNELS]])


def rescale_percentile(channel: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Linearly map the ``low``..``high`` percentile range of ``channel`` to 0..1, clipping outside."""
    lower, upper = np.percentile(channel, [low, high])
    scaled = (np.asarray(channel, dtype=np.float32) - lower) / max(upper - lower, np.finfo(np.float32).eps)
    return np.clip(scaled, 0.0, 1.0)


def composite_rgb(
    image: np.ndarray,
    channels: Sequence[str] = CHANNELS,
    colours: Mapping[str, tuple[float, float, float]] = CHANNEL_COLOURS,
    low: float = 0.5,
    high: float = 99.5,
) -> np.ndarray:
    """Additive colour composite of a (5, H, W) image for display, as (H, W, 3) floats in 0..1.

    Each stain in ``channels`` is scaled with :func:`rescale_percentile` (``low``,
    ``high``) and tinted with its colour from ``colours``; the tints are summed
    and divided by the largest per-component total, so that no component
    saturates and each stain keeps its hue.
    """
    tints = np.asarray([colours[name] for name in channels], dtype=np.float32)
    scaled = np.stack([rescale_percentile(image[CHANNELS.index(name)], low, high) for name in channels], axis=-1)
    return np.clip(scaled @ tints / tints.sum(axis=0).max(), 0.0, 1.0)
