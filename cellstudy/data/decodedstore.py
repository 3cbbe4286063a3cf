"""The decoded field store: every field of a field table decoded from its TIFFs once, kept as a ``.npy`` file.

Decoding a 1080 × 1080 five-channel LZW field costs tens of milliseconds; a training crop out of a
memory-mapped decoded field costs a fraction of one. :func:`convert_fields` decodes each field of a
field table once into ``<store>/<plate folder>/<well>-f<field>-<signature>.npy`` (a ``(5, H, W)``
array in :data:`~cellstudy.data.images.CHANNELS` order) and returns the table with the
:data:`~cellstudy.columns.DECODED_FIELD` column naming each file, which every reader of field tables
then memory-maps in place of the TIFFs (:func:`cellstudy.data.fieldstore.read_table_field`)::

    table = convert_fields(read_field_table("build/gallery/fields.csv"), "build/gallery/decoded")
    store = FieldStore(table)  # crops, embedding and classical features read the decoded files

The pixels keep their raw dtype, uint16, so that a field read from the store equals the field read from
its TIFFs bit for bit (the book's decisions page weighs the alternatives).

- **Source and settings recorded.** A file's ``signature`` hashes the store's format and dtype, the
  field's plate folder, well, field and channel map, and each channel TIFF's name, size and
  modification time. A changed TIFF, layout or store format gives the field another file name, so a
  stale file is never read: it is decoded again and the stale one deleted.
- **Resumable, atomic per field.** Each file is written through a temporary file and renamed; a
  conversion that stopped leaves whole files only, and the next one decodes only the fields
  whose file is missing.
- **Verified.** Each field read must be ``(5, H, W)`` uint16 with equal channel shapes
  (:func:`cellstudy.data.images.read_field`), and the written file must read back with that shape.
- **Parallel.** Fields are decoded by worker processes, with a progress bar
  (:func:`cellstudy.parallel.map_with_progress`).

One store folder holds the decoded fields of one field table: converting another table into it
deletes the first table's files. ``store.json`` in it records the format, dtype, channels, field count
and bytes of the last conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from cellstudy.columns import DECODED_FIELD
from cellstudy.data.fieldstore import FIELD_KEY, check_field_array, field_name, read_decoded
from cellstudy.data.images import CHANNELS, channel_paths, field_channel_maps, read_field
from cellstudy.files import atomic_path
from cellstudy.parallel import map_with_progress

STORE_FORMAT = 1
"""Version of the store's file layout; part of every signature, so a new version rebuilds old stores."""
STORE_DTYPE = np.dtype(np.uint16)
"""The decoded pixels' dtype: the TIFFs' own, so that the store is lossless."""
MANIFEST = "store.json"
"""File in the store folder recording the last conversion's settings and size."""
SIGNATURE_LENGTH = 16
"""Hex digits of the source signature kept in a decoded file's name."""


class _DecodeTask(NamedTuple):
    """One field to decode, and the file it goes to."""

    folder: str
    well: str
    field: int
    channel_map: Mapping[str, int]
    path: Path


def source_signature(folder: str | os.PathLike, well: str, field: int, channel_map: Mapping[str, int]) -> str:
    """Hash of what a decoded field depends on: the store's format and dtype, the field's plate folder name, well,
    field and channel map, and each channel TIFF's name, size and modification time (no pixels are read).

    Raises
    ------
    FileNotFoundError
        A channel file of the field is missing (the message names it).
    """
    files = []
    for path in channel_paths(folder, well, field, channel_map):
        if not path.is_file():
            raise FileNotFoundError(f"missing image file {path}")
        status = path.stat()
        files.append([path.name, status.st_size, status.st_mtime_ns])
    source = [STORE_FORMAT, STORE_DTYPE.str, Path(folder).name, well, int(field), dict(channel_map), files]
    return hashlib.sha256(json.dumps(source).encode()).hexdigest()[:SIGNATURE_LENGTH]


def decoded_path(store: str | os.PathLike, folder: str | os.PathLike, well: str, field: int, signature: str) -> Path:
    """Where a field's decoded file lives in ``store``: ``<plate folder name>/<well>-f<field>-<signature>.npy``."""
    return Path(store) / Path(folder).name / f"{well}-f{int(field):02d}-{signature}.npy"


def _task(store: Path, folder: str, well: str, field: int, channel_map: Mapping[str, int]) -> _DecodeTask:
    """The decoding of one field into the file its current source signature names."""
    signature = source_signature(folder, well, field, channel_map)
    return _DecodeTask(folder, well, field, channel_map, decoded_path(store, folder, well, field, signature))


def _decode(task: _DecodeTask) -> int:
    """Decode one field from its TIFFs into its ``.npy`` file (atomically) and check it reads back; its bytes."""
    name = field_name(task.folder, task.well, task.field)
    image = read_field(task.folder, task.well, task.field, task.channel_map)
    check_field_array(image.shape, image.dtype, f"field {name}")
    with atomic_path(task.path) as temp_path:
        with open(temp_path, "wb") as handle:
            np.save(handle, image.astype(STORE_DTYPE, copy=False))
        written = read_decoded(temp_path, name)
        if written.shape != image.shape:
            raise ValueError(f"decoded file of field {name} reads back as {written.shape}, not {image.shape}")
    return task.path.stat().st_size


def _remove_stale(store: Path, current: set[Path]) -> int:
    """Delete the ``.npy`` files in ``store`` that no current field names, and temporary files that a killed
    conversion left; returns how many files were deleted.
    """
    stale = [path for path in store.rglob("*.npy") if path not in current]
    stale += list(store.rglob(".*.tmp"))
    for path in stale:
        path.unlink()
    return len(stale)


def convert_fields(
    fields: pd.DataFrame, store: str | os.PathLike, n_workers: int = 2, progress: bool = True
) -> pd.DataFrame:
    """Decode every field of a field table into the store folder ``store`` (only those not there yet);
    returns the table with :data:`~cellstudy.columns.DECODED_FIELD` naming each field's file.

    Parameters
    ----------
    fields
        A field table (``folder``, ``well``, ``field``, optionally the channel layout); its row order and other
        columns are kept.
    store
        The store folder of this table (created if needed). Files of other fields or of stale sources in it
        are deleted.
    n_workers
        Processes decoding fields (1: in this process); the files do not depend on it.
    progress
        Show a progress bar over the fields decoded.

    Raises
    ------
    FileNotFoundError
        A channel file of a field is missing (the message names it).
    ValueError
        A field's TIFFs are unreadable, not uint16, or of unequal shapes (the message names the file).
    """
    store = Path(store)
    missing = [column for column in FIELD_KEY if column not in fields.columns]
    if missing:
        raise KeyError(f"the field table lacks field-table column(s) {missing}")
    keys = fields[list(FIELD_KEY)].itertuples(index=False)
    tasks = [
        _task(store, folder, well, int(field), channel_map)
        for (folder, well, field), channel_map in zip(keys, field_channel_maps(fields))
    ]
    store.mkdir(parents=True, exist_ok=True)
    _remove_stale(store, {task.path for task in tasks})
    todo = [task for task in tasks if not task.path.is_file()]
    map_with_progress(_decode, todo, n_workers, "decoding fields into the store", "field", progress, chunksize=1)
    manifest = {
        "format": STORE_FORMAT,
        "dtype": STORE_DTYPE.name,
        "channels": list(CHANNELS),
        "fields": len(tasks),
        "bytes": sum(task.path.stat().st_size for task in tasks),
    }
    with atomic_path(store / MANIFEST) as temp_path:
        temp_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return fields.assign(**{DECODED_FIELD: [str(task.path) for task in tasks]})
