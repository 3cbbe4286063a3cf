"""Field tables on disk, and their fields read on demand so that training scales past memory.

A *field table* has one row per field of view: ``folder``, ``well``, ``field``
and the well's ``Metadata_*`` columns (:meth:`cellstudy.simulation.simulate.SimulationResult.field_table`,
:func:`cellstudy.data.gallery.download_screen`), and optionally the field's channel layout
(:data:`cellstudy.data.images.LAYOUT`; CPJUMP1's where absent), which every reader of a
table follows. :func:`write_field_table` stores one
as CSV with each folder relative to the CSV's folder, and :func:`read_field_table`
joins them back onto it, so a build folder can be moved.

:class:`FieldStore` is the sequence of a table's ``(5, H, W)`` fields, each read
from its TIFFs when indexed (nothing is kept): :class:`cellstudy.training.crops.CropDataset`
and :func:`cellstudy.training.crops.compute_channel_stats` accept it in place of a list
of arrays, so a screen larger than memory can be pre-trained on::

    store = FieldStore("build/gallery/fields.csv")
    train(config, store, "build/models/mae", names=store.names)
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from tqdm import tqdm

from cellstudy.data.images import CHANNELS, channel_paths, field_channel_maps, read_field
from cellstudy.files import atomic_path

FIELD_KEY = ("folder", "well", "field")
"""Columns of a field table that locate a field; a well is a (folder, well) pair."""


def _check_columns(table: pd.DataFrame, where: str) -> None:
    missing = [column for column in FIELD_KEY if column not in table.columns]
    if missing:
        raise KeyError(f"{where} lacks field-table column(s) {missing}")


def write_field_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a field table as CSV (atomically), each ``folder`` relative to the CSV's folder; returns ``path``."""
    path = Path(path)
    _check_columns(table, "the field table")
    relative = table.assign(folder=[os.path.relpath(folder, path.parent) for folder in table["folder"]])
    with atomic_path(path) as temp_path:
        relative.to_csv(temp_path, index=False)
    return path


def read_field_table(path: str | os.PathLike) -> pd.DataFrame:
    """A field table written by :func:`write_field_table`, relative folders joined onto the CSV's folder.

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
    table = pd.read_csv(path, dtype={"folder": str, "well": str})
    _check_columns(table, str(path))
    return table.assign(folder=[str(path.parent / folder) for folder in table["folder"]])


def field_name(folder: str, well: str, field: int) -> str:
    """``"<folder>/<well>/f<field>"``, the name of a field in messages (as :func:`cellstudy.profiling.embed.read_fields`)."""
    return f"{folder}/{well}/f{int(field):02d}"


class FieldStore(Sequence):
    """The fields of a field table, each read from disk when indexed.

    Parameters
    ----------
    fields
        A field table, or the path of one written by :func:`write_field_table`; each row is read in
        its channel layout (:func:`cellstudy.data.images.field_channel_maps`).
    progress
        Show a progress bar while :attr:`shapes` reads the files' headers.

    Item ``i`` is :func:`cellstudy.data.images.read_field` of row ``i``: a ``(5, H, W)``
    uint16 array in :data:`~cellstudy.data.images.CHANNELS` order.

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
        self.progress = progress

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> np.ndarray:
        index = operator.index(index)
        folder, well, field = self.table.iloc[index]
        return read_field(folder, well, int(field), self.channel_maps[index])

    @property
    def names(self) -> list[str]:
        """``"<folder>/<well>/f<field>"`` of every field, for messages."""
        return [field_name(*key) for key in self.table.itertuples(index=False)]

    @cached_property
    def shapes(self) -> list[tuple[int, ...]]:
        """``(5, *plane shape)`` of every field, from the TIFF header of its first channel (no pixels are read).

        The other channels' shapes are checked when a field is read.

        Raises
        ------
        FileNotFoundError, ValueError
            A field's first channel file is missing or not a TIFF (the message names the file).
        """
        rows = tqdm(
            self.table.itertuples(index=False),
            total=len(self),
            desc="reading field shapes",
            unit="field",
            disable=not self.progress,
        )
        return [
            (len(CHANNELS), *_plane_shape(channel_paths(folder, well, int(field), channel_map)[0]))
            for (folder, well, field), channel_map in zip(rows, self.channel_maps)
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
