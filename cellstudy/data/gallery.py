"""Download CPJUMP1 plates and published profiles from the Cell Painting Gallery.

The Gallery is the public S3 bucket ``cellpainting-gallery`` (AWS us-east-1),
read here anonymously (unsigned requests, no AWS account). CPJUMP1 is
dataset ``cpg0000-jump-pilot``, source ``source_4``; for a batch such as
``2020_11_04_CPJUMP1`` the layout is::

    cpg0000-jump-pilot/source_4/images/<batch>/images/<plate folder>/Images/r01c01f01p01-ch1sk1fk1fl1.tiff
    cpg0000-jump-pilot/source_4/workspace/profiles/<batch>/<barcode>/<barcode>_normalized_feature_select_negcon_batch.csv.gz

A plate folder is the barcode, two underscores and the acquisition time, e.g.
``BR00116991__2020-11-05T19_51_35-Measurement1``, so :func:`plate_folders`
lists the batch to find a barcode's folder. Bucket, prefixes, the plate folder
and both file names were checked against the CPJUMP1 paper's download
instructions and public scripts that download these files; the region
(us-east-1) is assumed from the bucket's AWS Open Data listing and was not
checked here. Files in ``Images/`` whose names are not Phenix image names
(such as an index XML) are skipped.

:func:`list_plate_images` and :func:`download_plate_images` select files of the
bucket by stain, so they take the channel map of the bucket's files
(``channel_map``, CPJUMP1's by default). :func:`download_screen`, which writes a
field table, takes a layout name of :data:`cellstudy.data.images.CHANNEL_LAYOUTS`
instead and records it in the table (:func:`cellstudy.data.images.with_layout`).

Images land flat in ``<dest>/<barcode>/``, where :func:`cellstudy.data.images.read_field`
reads them; profiles land in ``<dest>/<batch>/<barcode>/``, where
:func:`cellstudy.data.published.load_published_profiles` reads them. Every file is
written through a temporary file, checked against the object's size and, when
its ETag is a plain MD5 (single-part uploads), its MD5; a file already present
with the object's size is not downloaded again, so an interrupted download
resumes file by file::

    paths = download_plate_images("BR00116991", "gallery", wells=["A01", "P24"], channels=["DNA", "Mito"])
    download_profiles(["BR00116991", "BR00116992"], "gallery/profiles")

:func:`download_screen` downloads chosen fields of every non-empty well of
whole plates and writes their field table (``<dest>/fields.csv``, read with
:func:`cellstudy.data.fieldstore.read_field_table`), the input of training and
embedding. :func:`config_from_env` is the one place that reads
``CELLSTUDY_GALLERY_ENDPOINT``: set it to read a mirror or a local S3 server
instead of AWS.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import boto3
import numpy as np
import pandas as pd
from botocore import UNSIGNED
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from cellstudy.columns import PERT_TYPE, PLATE, WELL
from cellstudy.data import cpjump1
from cellstudy.data.cpjump1 import PAPER_BATCH
from cellstudy.data.fieldstore import FIELD_KEY, write_field_table
from cellstudy.data.images import (
    CHANNELS,
    CPJUMP1_CHANNELS,
    DEFAULT_LAYOUT,
    channel_paths,
    field_channel_maps,
    layout_channels,
    parse_name,
    parse_well,
    with_layout,
)
from cellstudy.data.published import PROFILE_SUFFIX
from cellstudy.data.sources import ChecksumError
from cellstudy.files import atomic_path

PLATE_SEPARATOR = "__"
"""Separates the barcode from the acquisition time in a plate folder name."""
IMAGES_FOLDER = "Images"
"""Sub-folder of a plate folder that holds the TIFFs."""
CHUNK_BYTES = 1 << 20
"""Bytes read from the network at a time."""
FIELD_TABLE_FILE = "fields.csv"
"""File name of the field table :func:`download_screen` writes in its destination."""
ENDPOINT_VARIABLE = "CELLSTUDY_GALLERY_ENDPOINT"
"""Environment variable naming an S3 endpoint to use instead of AWS (see :func:`config_from_env`)."""

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class GalleryConfig:
    """Where the Gallery's CPJUMP1 files are.

    Parameters
    ----------
    bucket
        S3 bucket name.
    prefix
        Dataset and source inside the bucket.
    batch
        Experiment batch (folder name under ``images/`` and ``workspace/profiles/``).
    endpoint_url
        S3 endpoint; ``None`` for AWS, else a mirror or a local test server.
    region
        AWS region of the bucket.
    max_attempts
        Attempts per request before an error is raised (botocore's standard retries).
    """

    bucket: str = "cellpainting-gallery"
    prefix: str = "cpg0000-jump-pilot/source_4"
    batch: str = PAPER_BATCH
    endpoint_url: str | None = None
    region: str = "us-east-1"
    max_attempts: int = 5

    @property
    def images_prefix(self) -> str:
        """Key prefix above the plate folders, ending in ``/``."""
        return f"{self.prefix}/images/{self.batch}/images/"

    @property
    def profiles_prefix(self) -> str:
        """Key prefix above the per-plate profile folders, ending in ``/``."""
        return f"{self.prefix}/workspace/profiles/{self.batch}/"

    def url(self, key: str) -> str:
        """``s3://bucket/key``, for messages."""
        return f"s3://{self.bucket}/{key}"


def config_from_env() -> GalleryConfig:
    """The default :class:`GalleryConfig`, with ``endpoint_url`` from :data:`ENDPOINT_VARIABLE` when it is set.

    E.g. ``CELLSTUDY_GALLERY_ENDPOINT=http://127.0.0.1:5000`` reads a local S3
    server filled in the Gallery's layout; unset or empty, AWS.
    """
    return GalleryConfig(endpoint_url=os.environ.get(ENDPOINT_VARIABLE) or None)


class GalleryObject(NamedTuple):
    """One object in the bucket: its key, size in bytes and ETag (quotes removed)."""

    key: str
    size: int
    etag: str


def s3_client(config: GalleryConfig = GalleryConfig(), max_connections: int = 10) -> BaseClient:
    """An anonymous (unsigned) S3 client for ``config`` with up to ``max_connections`` open connections."""
    settings = Config(
        signature_version=UNSIGNED,
        region_name=config.region,
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
        max_pool_connections=max_connections,
    )
    return boto3.session.Session().client("s3", endpoint_url=config.endpoint_url, config=settings)


def _list(client: BaseClient, config: GalleryConfig, prefix: str, **options) -> Iterator[dict]:
    """The pages of a ``list_objects_v2`` listing of ``prefix``; errors name the prefix."""
    try:
        yield from client.get_paginator("list_objects_v2").paginate(Bucket=config.bucket, Prefix=prefix, **options)
    except (ClientError, BotoCoreError) as error:
        raise OSError(f"cannot list {config.url(prefix)}: {error}") from error


def plate_folders(barcodes: Sequence[str], config: GalleryConfig = GalleryConfig()) -> dict[str, str]:
    """Key prefix (ending in ``/``) of each plate's image folder.

    A plate is named by its barcode (``BR00116991``) or by its full folder
    name (``BR00116991__2020-11-05T19_51_35-Measurement1``).

    Raises
    ------
    FileNotFoundError
        A plate has no folder in the batch (the message names the plate and the prefix listed).
    ValueError
        A barcode matches several folders (the message lists them; pass the folder name instead).
    """
    pages = _list(s3_client(config), config, config.images_prefix, Delimiter="/")
    prefixes = [entry["Prefix"] for page in pages for entry in page.get("CommonPrefixes", [])]
    folders = {prefix.removeprefix(config.images_prefix).rstrip("/"): prefix for prefix in prefixes}
    found = {}
    for plate in barcodes:
        matches = [prefix for name, prefix in folders.items() if plate in (name, name.split(PLATE_SEPARATOR)[0])]
        if not matches:
            where = config.url(config.images_prefix)
            raise FileNotFoundError(f"plate {plate} not found: it has no image folder in {where}")
        if len(matches) > 1:
            raise ValueError(f"plate {plate} has several image folders {matches}; pass the folder name")
        found[plate] = matches[0]
    return found


def _is_selected(
    name: str, cells: set[tuple[int, int]] | None, fields: set[int] | None, channels: set[int] | None
) -> bool:
    """Whether ``name`` is a Phenix image of one of the (row, column) ``cells``, ``fields`` and ``channels``.

    ``None`` selects all; names that are not Phenix image names are never selected.
    """
    try:
        image = parse_name(name)
    except ValueError:
        return False
    return (
        (cells is None or (image.row, image.col) in cells)
        and (fields is None or image.field in fields)
        and (channels is None or image.channel in channels)
    )


def list_plate_images(
    barcode: str,
    wells: Sequence[str] | None = None,
    fields: Sequence[int] | None = None,
    channels: Sequence[str] | None = None,
    channel_map: Mapping[str, int] = CPJUMP1_CHANNELS,
    config: GalleryConfig = GalleryConfig(),
) -> list[GalleryObject]:
    """The image objects of one plate, restricted to ``wells``, ``fields`` and ``channels`` (``None``: all).

    Parameters
    ----------
    barcode
        Plate barcode or folder name (see :func:`plate_folders`).
    wells
        Well names, e.g. ``["A01", "P24"]``.
    fields
        Field (site) numbers.
    channels
        Stain names, e.g. ``["DNA", "Mito"]``, mapped to channel numbers by ``channel_map``.
    channel_map
        Stain name -> channel number of the source.
    config
        Where the files are.

    Raises
    ------
    FileNotFoundError
        The plate is not in the bucket, or no image matches the selection.
    ValueError, KeyError
        A well name cannot be read, or a stain is not in ``channel_map``.
    """
    unknown = [name for name in channels or [] if name not in channel_map]
    if unknown:
        raise KeyError(f"stain(s) {unknown} not in the channel map {dict(channel_map)}")
    cells = None if wells is None else {parse_well(well) for well in wells}
    numbers = None if channels is None else {channel_map[name] for name in channels}
    field_set = None if fields is None else set(fields)
    prefix = plate_folders([barcode], config)[barcode] + f"{IMAGES_FOLDER}/"
    objects = [
        GalleryObject(item["Key"], item["Size"], item["ETag"].strip('"'))
        for page in _list(s3_client(config), config, prefix)
        for item in page.get("Contents", [])
        if _is_selected(item["Key"].rsplit("/", 1)[-1], cells, field_set, numbers)
    ]
    if not objects:
        raise FileNotFoundError(
            f"no image of plate {barcode} in {config.url(prefix)} matches "
            f"wells {wells}, fields {fields}, channels {channels}"
        )
    return sorted(objects)


def _verify(obj: GalleryObject, size: int, md5: str, config: GalleryConfig) -> None:
    """Raise :class:`ChecksumError` naming the object if the received size or MD5 differs from it."""
    if size != obj.size:
        raise ChecksumError(f"{config.url(obj.key)}: received {size} bytes, expected {obj.size}")
    if _PLAIN_MD5.fullmatch(obj.etag) and md5 != obj.etag:
        raise ChecksumError(f"{config.url(obj.key)}: MD5 of the received bytes is {md5}, the ETag says {obj.etag}")


def _fetch(client: BaseClient, obj: GalleryObject, path: Path, config: GalleryConfig) -> None:
    """Download ``obj`` to ``path`` through a temporary file, verified; errors name the key."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        body = client.get_object(Bucket=config.bucket, Key=obj.key)["Body"]
        with atomic_path(path) as temp_path, open(temp_path, "wb") as out:
            for block in body.iter_chunks(CHUNK_BYTES):
                out.write(block)
                digest.update(block)
            out.flush()
            _verify(obj, out.tell(), digest.hexdigest(), config)
    except (ClientError, BotoCoreError) as error:
        raise OSError(f"download of {config.url(obj.key)} failed: {error}") from error


def _is_complete(path: Path, obj: GalleryObject) -> bool:
    return path.is_file() and path.stat().st_size == obj.size


def download_objects(
    objects: Mapping[Path, GalleryObject],
    config: GalleryConfig = GalleryConfig(),
    n_threads: int = 4,
    progress: bool = True,
) -> list[Path]:
    """Download each object to its path, skipping paths already present with the object's size.

    Parameters
    ----------
    objects
        Local path -> object to store there.
    config
        Where the objects are.
    n_threads
        Parallel downloads.
    progress
        Show a progress bar (bytes).

    Returns
    -------
    The local paths, sorted.

    Raises
    ------
    ChecksumError
        Received bytes differ in size or MD5 from the object (nothing is written).
    OSError
        A request failed after the configured retries (the message names the key).
    """
    missing = {path: obj for path, obj in objects.items() if not _is_complete(path, obj)}
    client = s3_client(config, max_connections=max(10, n_threads))
    with (
        tqdm(
            total=sum(obj.size for obj in missing.values()),
            unit="B",
            unit_scale=True,
            desc="gallery",
            disable=not progress,
        ) as bar,
        ThreadPoolExecutor(max_workers=n_threads) as pool,
    ):
        futures = {pool.submit(_fetch, client, obj, path, config): obj for path, obj in missing.items()}
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(futures[future].size)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # stop at the first error instead of fetching the rest
            raise
    return sorted(objects)


def download_plate_images(
    barcode: str,
    dest: str | os.PathLike,
    wells: Sequence[str] | None = None,
    fields: Sequence[int] | None = None,
    channels: Sequence[str] | None = None,
    channel_map: Mapping[str, int] = CPJUMP1_CHANNELS,
    config: GalleryConfig = GalleryConfig(),
    n_threads: int = 4,
    progress: bool = True,
) -> list[Path]:
    """Download a plate's images (all, or the selected wells, fields and stains) to ``<dest>/<barcode>/``.

    The selection is as in :func:`list_plate_images`, the download as in
    :func:`download_objects`. Returns the local paths, sorted.
    """
    objects = plate_image_objects(barcode, dest, wells, fields, channels, channel_map, config)
    return download_objects(objects, config, n_threads, progress)


def plate_image_objects(
    barcode: str,
    dest: str | os.PathLike,
    wells: Sequence[str] | None = None,
    fields: Sequence[int] | None = None,
    channels: Sequence[str] | None = None,
    channel_map: Mapping[str, int] = CPJUMP1_CHANNELS,
    config: GalleryConfig = GalleryConfig(),
) -> dict[Path, GalleryObject]:
    """Local path in ``<dest>/<barcode>/`` -> object, for the images :func:`list_plate_images` selects."""
    folder = Path(dest) / barcode
    objects = list_plate_images(barcode, wells, fields, channels, channel_map, config)
    return {folder / obj.key.rsplit("/", 1)[-1]: obj for obj in objects}


def screen_field_table(
    plates: Sequence[str],
    dest: str | os.PathLike,
    fields: Sequence[int],
    wells: Sequence[str] | None = None,
    metadata_folder: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The field table of a screen of ``plates`` stored in ``dest``, from the CPJUMP1 design (no download).

    One row per selected field of every non-empty well of each plate's plate map
    (optionally only the well positions ``wells``): the well's
    :func:`cellstudy.data.cpjump1.well_table` columns, then ``folder``
    (``<dest>/<barcode>``), ``well`` and ``field``; sorted by plate, row, column
    and field. The table :func:`download_screen` returns once the files are there.

    Raises
    ------
    ValueError
        No field is selected, or a well of ``wells`` is empty or absent on every plate map of ``plates``.
    """
    design = cpjump1.well_table(metadata_folder, plates)
    design = design[design[PERT_TYPE] != cpjump1.EMPTY_WELL]
    if wells is not None:
        absent = sorted(set(wells) - set(design[WELL]))
        if absent:
            raise ValueError(f"well(s) {absent} hold no perturbation on the plate maps of plates {list(plates)}")
        design = design[design[WELL].isin(wells)]
    numbers = sorted(set(fields))
    if not numbers:
        raise ValueError("no fields selected")
    repeated = design.loc[design.index.repeat(len(numbers))].reset_index(drop=True)
    return repeated.assign(
        folder=[str(Path(dest) / plate) for plate in repeated[PLATE]],
        well=repeated[WELL],
        field=np.tile(numbers, len(design)),
    )


def _check_complete(table: pd.DataFrame, stains: Sequence[str]) -> None:
    """Raise if a field of ``table`` lacks one of ``stains`` on disk, naming plate, well and field.

    Each field's files are named in its channel layout (:func:`cellstudy.data.images.field_channel_maps`).
    """
    incomplete = []
    rows = zip(table[[PLATE, *FIELD_KEY]].itertuples(index=False), field_channel_maps(table))
    for (plate, folder, well, field), channel_map in rows:
        paths = dict(zip(CHANNELS, channel_paths(folder, well, field, channel_map)))
        missing = [stain for stain in stains if not paths[stain].is_file()]
        if missing:
            incomplete.append(f"plate {plate} well {well} field {field} lacks {missing}")
    if incomplete:
        raise FileNotFoundError(
            f"{len(incomplete)} field(s) are incomplete after the download (not in the bucket?): "
            + "; ".join(incomplete[:10])
            + ("; ..." if len(incomplete) > 10 else "")
        )


def download_screen(
    plates: Sequence[str],
    dest: str | os.PathLike,
    fields: Sequence[int],
    channels: Sequence[str] | None = None,
    wells: Sequence[str] | None = None,
    metadata_folder: str | os.PathLike | None = None,
    config: GalleryConfig = GalleryConfig(),
    layout: str = DEFAULT_LAYOUT,
    n_threads: int = 4,
    progress: bool = True,
) -> pd.DataFrame:
    """Download the selected fields of every non-empty well of ``plates`` and write their field table.

    Images land in ``<dest>/<barcode>/`` (resumed file by file, as in
    :func:`download_objects`); the field table (:func:`screen_field_table`) is
    written last, atomically, to ``<dest>/fields.csv`` (:data:`FIELD_TABLE_FILE`),
    so its presence means every listed field is on disk.

    Parameters
    ----------
    plates
        CPJUMP1 plate barcodes (of :data:`~cellstudy.data.cpjump1.PAPER_BATCH`, e.g. ``BR00117010``).
    dest
        Download folder.
    fields
        Field (site) numbers downloaded per well.
    channels
        Stains downloaded (``None``: all five, which reading a field needs).
    wells
        Only these well positions (``None``: every non-empty well of the plate maps).
    metadata_folder
        CPJUMP1 metadata folder (:func:`cellstudy.data.cpjump1.metadata_folder`).
    config
        Where the files are (:func:`config_from_env` reads a mirror from the environment).
    layout
        Channel layout of the source's files, a name in :data:`cellstudy.data.images.CHANNEL_LAYOUTS`;
        the table records it (:func:`cellstudy.data.images.with_layout`: a column only for a layout
        other than CPJUMP1's).
    n_threads
        Parallel downloads.
    progress
        Show a progress bar (bytes).

    Raises
    ------
    FileNotFoundError
        A plate has no image folder, or a selected field lacks a stain after the
        download (the message names plate, well and field); no table is written.
    ValueError
        ``layout`` is unknown, or as :func:`screen_field_table` (an empty or absent selection).
    """
    channel_map = layout_channels(layout)
    table = with_layout(screen_field_table(plates, dest, fields, wells, metadata_folder), layout)
    objects = {}
    for plate, group in table.groupby(PLATE, sort=False):
        objects.update(
            plate_image_objects(
                plate, dest, group["well"].unique().tolist(), sorted(set(fields)), channels, channel_map, config
            )
        )
    download_objects(objects, config, n_threads, progress)
    _check_complete(table, CHANNELS if channels is None else channels)
    write_field_table(table, Path(dest) / FIELD_TABLE_FILE)
    return table


def _profile_object(client: BaseClient, barcode: str, config: GalleryConfig) -> GalleryObject:
    """The published profile file of ``barcode`` as listed in the bucket."""
    key = f"{config.profiles_prefix}{barcode}/{barcode}{PROFILE_SUFFIX}"
    for page in _list(client, config, key):
        for item in page.get("Contents", []):
            if item["Key"] == key:
                return GalleryObject(key, item["Size"], item["ETag"].strip('"'))
    raise FileNotFoundError(f"published profiles of plate {barcode} not found: {config.url(key)}")


def download_profiles(
    barcodes: Sequence[str], dest: str | os.PathLike, config: GalleryConfig = GalleryConfig(), n_threads: int = 4
) -> list[Path]:
    """Download the published CellProfiler profiles of ``barcodes`` to ``<dest>/<batch>/<barcode>/``.

    ``load_published_profiles(dest, barcodes)`` then reads them. Returns the
    local paths, sorted.

    Raises
    ------
    FileNotFoundError
        A plate has no published profile file (the message names the plate and key).
    """
    client = s3_client(config)
    objects = {
        Path(dest) / config.batch / barcode / f"{barcode}{PROFILE_SUFFIX}": _profile_object(client, barcode, config)
        for barcode in barcodes
    }
    return download_objects(objects, config, n_threads)
