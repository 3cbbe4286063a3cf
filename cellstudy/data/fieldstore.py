"""Field tables on disk, and their fields read on demand so that training scales past memory.

A *field table* has one row per field of view: ``folder``, ``well``, ``field``
and the well's ``Metadata_*`` columns (:meth:`cellstudy.simulation.simulate.SimulationResult.field_table`,
:func:`cellstudy.data.gallery.download_screen`), and optionally the field's channel layout
(:data:`cellstudy.data.images.LAYOUT`; CPJUMP1's where absent), which every reader of a
table follows. A table converted by :func:`cellstudy.data.decodedstore.convert_fields`
also names each field's decoded copy (:data:`cellstudy.columns.DECODED_FIELD`, a ``.npy`` file), which
every reader memory-maps in place of decoding the TIFFs (:func:`read_table_field`).
:func:`write_field_table` stores a table as CSV with each folder (and decoded file) relative to the
CSV's folder, and :func:`read_field_table` joins them back onto it, so a build folder can be moved.

:class:`FieldStore` is the sequence of a table's ``(5, H, W)`` fields, each read
from disk when indexed (nothing is kept): :class:`cellstudy.training.crops.CropDataset`
and :func:`cellstudy.training.crops.compute_channel_stats` accept it in place of a list
of arrays, so a screen larger than memory can be pre-trained on::

    store = FieldStore("build/gallery/fields.csv")
    train(config, store, "build/models/mae", names=store.names)
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from tqdm import tqdm

from cellstudy.columns import DECODED_FIELD
from cellstudy.data.images import CHANNELS, channel_paths, field_channel_maps, read_field
from cellstudy.files import atomic_path

FIELD_KEY = ("folder", "well", "field")
"""Columns of a field table that locate a field; a well is a (folder, well) pair."""


def _check_columns(table: pd.DataFrame, where: str) -> None:
    missing = [column for column in FIELD_KEY if column not in table.columns]
    if missing:
        raise KeyError(f"{where} lacks field-table column(s) {missing}")


def write_field_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a field table as CSV (atomically), each ``folder`` and decoded file relative to the CSV's folder;
    returns ``path``.
    """
    path = Path(path)
    _check_columns(table, "the field table")
    relative = table.assign(folder=[os.path.relpath(folder, path.parent) for folder in table["folder"]])
    if DECODED_FIELD in table.columns:
        relative[DECODED_FIELD] = [
            None if pd.isna(file) else os.path.relpath(file, path.parent) for file in table[DECODED_FIELD]
        ]
    with atomic_path(path) as temp_path:
        relative.to_csv(temp_path, index=False)
    return path


def read_field_table(path: str | os.PathLike) -> pd.DataFrame:
    """A field table written by :func:`write_field_table`, relative folders (and decoded files) joined onto the
    CSV's folder.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    KeyError
        The CSV lacks ``folder``, ``well`` or ``field`` (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"field table {path} does not exist")
    table = pd.read_csv(path, dtype={"folder": str, "well": str, DECODED_FIELD: str})
    _check_columns(table, str(path))
    table = table.assign(folder=[str(path.parent / folder) for folder in table["folder"]])
    if DECODED_FIELD in table.columns:
        table[DECODED_FIELD] = [None if pd.isna(file) else str(path.parent / file) for file in table[DECODED_FIELD]]
    return table


def field_name(folder: str, well: str, field: int) -> str:
    """``"<folder>/<well>/f<field>"``, the name of a field in messages (as :func:`cellstudy.profiling.embed.read_fields`)."""
    return f"{folder}/{well}/f{int(field):02d}"


def decoded_files(table: pd.DataFrame) -> list[str | None]:
    """The decoded file (:data:`~cellstudy.columns.DECODED_FIELD`) of each row of a field table; ``None`` where it
    names none (the row is read from its TIFFs).
    """
    if DECODED_FIELD not in table.columns:
        return [None] * len(table)
    return [None if pd.isna(file) else str(file) for file in table[DECODED_FIELD]]


def read_decoded(path: str | os.PathLike, name: str) -> np.ndarray:
    """The ``(5, H, W)`` uint16 field in the ``.npy`` file ``path``, memory-mapped: pixels are read from disk only
    where they are used, so a crop costs only its own pages. ``name`` names the field in errors.

    The array is read-only (it maps the file).

    Raises
    ------
    FileNotFoundError
        The file is missing (the message names it and the field, and says how to rebuild it).
    ValueError
        The file is not a ``.npy`` file of a ``(5, H, W)`` uint16 array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"decoded file {path} of field {name} is missing: convert its field table again "
            "(cellstudy.data.decodedstore.convert_fields)"
        )
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"cannot read decoded file {path} of field {name}: {error}") from error
    check_field_array(array.shape, array.dtype, f"decoded file {path} of field {name}")
    return array.view(np.ndarray)


def check_field_array(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """Check the shape and dtype of a field's array: raise a ``ValueError`` naming ``where`` unless ``shape`` and ``dtype`` are a ``(5, H, W)`` uint16 field's."""
    if len(shape) != 3 or shape[0] != len(CHANNELS) or min(shape) < 1 or dtype != np.uint16:
        raise ValueError(f"{where} holds shape {shape} dtype {dtype}, expected ({len(CHANNELS)}, H, W) uint16")


def read_table_field(
    folder: str, well: str, field: int, channel_map: Mapping[str, int], decoded: str | None = None
) -> np.ndarray:
    """One field of a field table's row: memory-mapped from its ``decoded`` file where the row names one
    (:func:`read_decoded`), else decoded from its TIFFs (:func:`cellstudy.data.images.read_field`).
    """
    if decoded is None:
        return read_field(folder, well, int(field), channel_map)
    return read_decoded(decoded, field_name(folder, well, field))


def _decoded_shape(path: str, name: str) -> tuple[int, ...]:
    """Shape of the field in a decoded ``.npy`` file, from its header (no pixels are read)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(handle)
    except FileNotFoundError:
        return read_decoded(path, name).shape  # raises the error naming the field
    except (ValueError, OSError) as error:
        raise ValueError(f"cannot read the header of decoded file {path} of field {name}: {error}") from error
    check_field_array(shape, dtype, f"decoded file {path} of field {name}")
    return tuple(shape)


class FieldStore(Sequence):
    """The fields of a field table, each read from disk when indexed.

    Parameters
    ----------
    fields
        A field table, or the path of one written by :func:`write_field_table`; each row is read from its
        decoded file where it names one, else from its TIFFs in its channel layout
        (:func:`cellstudy.data.images.field_channel_maps`).
    progress
        Show a progress bar while :attr:`shapes` reads the files' headers.

    Item ``i`` is :func:`read_table_field` of row ``i``: a ``(5, H, W)`` uint16 array in
    :data:`~cellstudy.data.images.CHANNELS` order (read-only and memory-mapped from a decoded file).

    Raises
    ------
    KeyError
        The table lacks ``folder``, ``well`` or ``field``.
    ValueError
        A row names an unknown channel layout.
    """

    def __init__(
        self,
        fields: pd.DataFrame | str | os.PathLike,
        progress: bool = True,
    ) -> None:
        table = fields if isinstance(fields, pd.DataFrame) else read_field_table(fields)
        _check_columns(table, "the field table")
        self.table = table[list(FIELD_KEY)].reset_index(drop=True)
        self.channel_maps = field_channel_maps(table)
        self.decoded = decoded_files(table)
        self.progress = progress

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> np.ndarray:
        index = operator.index(index)
        folder, well, field = self.table.iloc[index]
        return read_table_field(folder, well, int(field), self.channel_maps[index], self.decoded[index])

    @property
    def names(self) -> list[str]:
        """``"<folder>/<well>/f<field>"`` of every field, for messages."""
        return [field_name(*key) for key in self.table.itertuples(index=False)]

    @cached_property
    def shapes(self) -> list[tuple[int, ...]]:
        """``(5, *plane shape)`` of every field, from the header of its decoded file or of its first channel's TIFF
        (no pixels are read).

        The other channels' shapes are checked when a field is read.

        Raises
        ------
        FileNotFoundError, ValueError
            A field's decoded file or first channel file is missing or unreadable (the message names the file).
        """
        rows = tqdm(
            self.table.itertuples(index=False),
            total=len(self),
            desc="reading field shapes",
            unit="field",
            disable=not self.progress,
        )
        return [
            _decoded_shape(decoded, field_name(folder, well, field))
            if decoded is not None
            else (len(CHANNELS), *_plane_shape(channel_paths(folder, well, int(field), channel_map)[0]))
            for (folder, well, field), channel_map, decoded in zip(rows, self.channel_maps, self.decoded)
        ]


def _plane_shape(path: Path) -> tuple[int, ...]:
    """Shape of the first page of a TIFF, read from its header."""
    if not path.is_file():
        raise FileNotFoundError(f"missing image file {path}")
    try:
        with tifffile.TiffFile(path) as tiff:
            return tuple(tiff.pages.first.shape)
    except (ValueError, OSError, IndexError) as error:
        raise ValueError(f"cannot read the image header of {path}: {error}") from error
