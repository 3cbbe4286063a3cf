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
(such as the ``Index.idx.xml`` of the microscope) are skipped.

A CPJUMP1 site (field) has eight images: the five Cell Painting channels
ch1-ch5 and three brightfield planes ch6-ch8, which the study does not read.
:func:`list_plate_images` and :func:`download_plate_images` select files of the
bucket by stain, so they take the channel map of the bucket's files
(``channel_map``, CPJUMP1's by default) and select only its stains: the
brightfield planes are never downloaded.
:func:`download_screen`, which writes a field table, takes a layout name of
:data:`cellstudy.data.images.CHANNEL_LAYOUTS` instead and records it in the
table (:func:`cellstudy.data.images.with_layout`).

Images land flat in ``<dest>/<barcode>/``, where :func:`cellstudy.data.images.read_field`
reads them; profiles land in ``<dest>/<batch>/<barcode>/``, where
:func:`cellstudy.data.published.load_published_profiles` reads them. Every file is
written through a temporary file, checked against the object's size and, when
its ETag is a plain MD5 (single-part uploads), its MD5; a file already present
with the object's size is not downloaded again, so an interrupted download
resumes file by file. A failed file is tried again after an exponential
back-off (:attr:`GalleryConfig.file_attempts`, :attr:`GalleryConfig.backoff_seconds`)::

    paths = download_plate_images("BR00116991", "gallery", wells=["A01", "P24"], channels=["DNA", "Mito"])
    download_profiles(["BR00116991", "BR00116992"], "gallery/profiles")

:func:`download_screen` downloads chosen fields of every non-empty well of
whole plates and writes their field table (``<dest>/fields.csv``, read with
:func:`cellstudy.data.fieldstore.read_field_table`), the input of training and
embedding. CPJUMP1 is not complete: wells have 7, 8, 9 or 16 sites and some
plates lack wells or single images. A field that lacks a channel in the bucket,
or whose download still fails after the retries, is skipped: the field table
lists only fields with every channel on disk, and every skipped image is
reported in ``<dest>/skipped_images.csv`` (:func:`read_skipped`).

:func:`config_from_env` is the one place that reads
``CELLSTUDY_GALLERY_ENDPOINT``: set it to read a mirror or a local S3 server
instead of AWS.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
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

from cellstudy.columns import ANOMALY, CELL_TYPE, MODALITY, PERT_TYPE, PLATE, TIMEPOINT, WELL
from cellstudy.data import cpjump1
from cellstudy.data.cpjump1 import PAPER_BATCH
from cellstudy.data.fieldstore import FIELD_KEY, read_field_table, write_field_table
from cellstudy.data.images import (
    CHANNELS,
    CPJUMP1_CHANNELS,
    DEFAULT_LAYOUT,
    channel_paths,
    field_channel_maps,
    parse_name,
    parse_well,
    well_id,
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
SKIPPED_FILE = "skipped_images.csv"
"""File name of the report of skipped images :func:`download_screen` writes beside its field table."""
SKIPPED_COLUMNS = [PLATE, "well", "field", "channel", "file", "reason", "detail"]
"""Columns of the skipped-image report: where the image is, its stain and file name, a :data:`SKIP_REASONS`
value and the details (the sites the well has, the error of the last attempt)."""
WELL_ABSENT, SITE_ABSENT, FILE_ABSENT, DOWNLOAD_FAILED = "well absent", "site absent", "file absent", "download failed"
SKIP_REASONS = (WELL_ABSENT, SITE_ABSENT, FILE_ABSENT, DOWNLOAD_FAILED)
"""Why an image was skipped: the bucket has no image of its well, no image of its site, not its channel of the
site, or it is in the bucket but every attempt to download it failed (tried again by the next download)."""
PERMANENT_ERRORS = (FileNotFoundError, PermissionError)
"""Errors of a file that another attempt cannot cure (no such key, access denied): never retried."""

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
    file_attempts
        Attempts per file, each a fresh request, before the file is given up. They cover what botocore's
        request retries do not: a connection dropped while the body streams, bytes that fail the size or
        MD5 check. A missing key or a refused access is not retried (:data:`PERMANENT_ERRORS`).
    backoff_seconds
        Wait before the first retry of a file; it doubles before each further one (exponential back-off,
        :func:`retry_delays`: 2, 4 and 8 s by default).
    """

    bucket: str = "cellpainting-gallery"
    prefix: str = "cpg0000-jump-pilot/source_4"
    batch: str = PAPER_BATCH
    endpoint_url: str | None = None
    region: str = "us-east-1"
    max_attempts: int = 5
    file_attempts: int = 4
    backoff_seconds: float = 2.0

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


def retry_delays(config: GalleryConfig) -> list[float]:
    """Seconds waited before each retry of a file: :attr:`GalleryConfig.backoff_seconds`, doubling each time."""
    return [config.backoff_seconds * 2**retry for retry in range(config.file_attempts - 1)]


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


def plate_images(barcode: str, config: GalleryConfig = GalleryConfig()) -> dict[str, GalleryObject]:
    """File name -> object of every Phenix image in a plate's ``Images/`` folder, brightfield included.

    Other files of the folder (such as ``Index.idx.xml``) are left out.

    Raises
    ------
    FileNotFoundError
        The plate has no image folder (as :func:`plate_folders`).
    """
    prefix = plate_folders([barcode], config)[barcode] + f"{IMAGES_FOLDER}/"
    objects = (
        GalleryObject(item["Key"], item["Size"], item["ETag"].strip('"'))
        for page in _list(s3_client(config), config, prefix)
        for item in page.get("Contents", [])
    )
    return {obj.key.rsplit("/", 1)[-1]: obj for obj in objects if _is_image(obj.key.rsplit("/", 1)[-1])}


def _is_image(name: str) -> bool:
    """Whether ``name`` is a Phenix image name."""
    try:
        parse_name(name)
    except ValueError:
        return False
    return True


def _is_selected(name: str, cells: set[tuple[int, int]] | None, fields: set[int] | None, channels: set[int]) -> bool:
    """Whether the Phenix image ``name`` is of one of the (row, column) ``cells``, ``fields`` and ``channels``.

    ``None`` selects all cells or fields.
    """
    image = parse_name(name)
    return (
        (cells is None or (image.row, image.col) in cells)
        and (fields is None or image.field in fields)
        and image.channel in channels
    )


def list_plate_images(
    barcode: str,
    wells: Sequence[str] | None = None,
    fields: Sequence[int] | None = None,
    channels: Sequence[str] | None = None,
    channel_map: Mapping[str, int] = CPJUMP1_CHANNELS,
    config: GalleryConfig = GalleryConfig(),
) -> list[GalleryObject]:
    """The image objects of one plate, restricted to ``wells``, ``fields`` and ``channels``.

    Parameters
    ----------
    barcode
        Plate barcode or folder name (see :func:`plate_folders`).
    wells
        Well names, e.g. ``["A01", "P24"]``; ``None``: every well.
    fields
        Field (site) numbers; ``None``: every field.
    channels
        Stain names, e.g. ``["DNA", "Mito"]``, mapped to channel numbers by ``channel_map``; ``None``: every
        stain of ``channel_map``, so never a brightfield plane (CPJUMP1's ch6-ch8).
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
    numbers = {channel_map[name] for name in (channel_map if channels is None else channels)}
    field_set = None if fields is None else set(fields)
    images = plate_images(barcode, config)
    objects = [obj for name, obj in images.items() if _is_selected(name, cells, field_set, numbers)]
    if not objects:
        where = config.url(plate_folders([barcode], config)[barcode] + IMAGES_FOLDER)
        raise FileNotFoundError(
            f"no image of plate {barcode} in {where}/ matches wells {wells}, fields {fields}, channels {channels}"
        )
    return sorted(objects)


def _verify(obj: GalleryObject, size: int, md5: str, config: GalleryConfig) -> None:
    """Raise :class:`ChecksumError` naming the object if the received size or MD5 differs from it."""
    if size != obj.size:
        raise ChecksumError(f"{config.url(obj.key)}: received {size} bytes, expected {obj.size}")
    if _PLAIN_MD5.fullmatch(obj.etag) and md5 != obj.etag:
        raise ChecksumError(f"{config.url(obj.key)}: MD5 of the received bytes is {md5}, the ETag says {obj.etag}")


_MISSING_CODES = {"NoSuchKey", "404"}
_REFUSED_CODES = {"AccessDenied", "403"}


def _request_error(error: ClientError | BotoCoreError, obj: GalleryObject, config: GalleryConfig) -> OSError:
    """The error to raise for a failed request of ``obj``, naming its key.

    ``FileNotFoundError`` for a missing key, ``PermissionError`` for a refused one (both
    :data:`PERMANENT_ERRORS`), ``OSError`` for the rest (connection, server, streaming errors).
    """
    code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
    kind = FileNotFoundError if code in _MISSING_CODES else PermissionError if code in _REFUSED_CODES else OSError
    return kind(f"download of {config.url(obj.key)} failed: {error}")


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
        raise _request_error(error, obj, config) from error


def _fetch_with_retries(client: BaseClient, obj: GalleryObject, path: Path, config: GalleryConfig) -> None:
    """:func:`_fetch`, tried again after each of :func:`retry_delays` unless the error is permanent.

    Raises the error of the last attempt.
    """
    for delay in retry_delays(config):
        try:
            return _fetch(client, obj, path, config)
        except PERMANENT_ERRORS:
            raise
        except (OSError, ChecksumError):
            time.sleep(delay)
    return _fetch(client, obj, path, config)


def _is_complete(path: Path, obj: GalleryObject) -> bool:
    return path.is_file() and path.stat().st_size == obj.size


def fetch_objects(
    objects: Mapping[Path, GalleryObject],
    config: GalleryConfig = GalleryConfig(),
    n_threads: int = 4,
    progress: bool = True,
) -> dict[Path, Exception]:
    """Download each object to its path, skipping paths already present with the object's size.

    Each file is tried up to :attr:`GalleryConfig.file_attempts` times with exponential back-off
    (:func:`retry_delays`); a file that still fails does not stop the others.

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
    The files that failed: local path -> the error of the last attempt (a :class:`ChecksumError` when the
    received bytes differ in size or MD5 from the object, else an ``OSError`` naming the key); nothing is
    written for them.
    """
    missing = {path: obj for path, obj in objects.items() if not _is_complete(path, obj)}
    client = s3_client(config, max_connections=max(10, n_threads))
    failures = {}
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
        futures = {pool.submit(_fetch_with_retries, client, obj, path, config): path for path, obj in missing.items()}
        try:
            for future in as_completed(futures):
                error = future.exception()
                if error is None:
                    bar.update(missing[futures[future]].size)
                elif isinstance(error, (OSError, ChecksumError)):
                    failures[futures[future]] = error
                    bar.set_postfix(failed=len(failures))
                else:
                    raise error  # a bug, not a failed download
        except BaseException:
            pool.shutdown(cancel_futures=True)  # an interrupt stops the download instead of fetching the rest
            raise
    return dict(sorted(failures.items()))


def download_objects(
    objects: Mapping[Path, GalleryObject],
    config: GalleryConfig = GalleryConfig(),
    n_threads: int = 4,
    progress: bool = True,
) -> list[Path]:
    """Download each object to its path as :func:`fetch_objects` does, and raise if a file failed.

    The error raised is the first failed file's (in path order), once every other file was tried; a note
    on it says how many failed.

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
    failures = fetch_objects(objects, config, n_threads, progress)
    if failures:
        error = next(iter(failures.values()))
        error.add_note(f"{len(failures)} of {len(objects)} file(s) failed; the others were downloaded")
        raise error
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
    :func:`cellstudy.data.cpjump1.well_table` columns, its plate's staining anomaly
    (:data:`~cellstudy.columns.ANOMALY`, from :func:`cellstudy.data.cpjump1.plate_anomalies`), then
    ``folder`` (``<dest>/<barcode>``), ``well`` and ``field``; sorted by plate, row, column and field.
    :func:`download_screen` returns the rows of it whose images are all there.

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
    anomalies = cpjump1.plate_anomalies(metadata_folder, plates).set_index(PLATE)[ANOMALY]
    repeated = design.loc[design.index.repeat(len(numbers))].reset_index(drop=True)
    return repeated.assign(
        **{ANOMALY: repeated[PLATE].map(anomalies)},
        folder=[str(Path(dest) / plate) for plate in repeated[PLATE]],
        well=repeated[WELL],
        field=np.tile(numbers, len(design)),
    )


BANDWIDTHS = {"100 Mbit/s": 100e6 / 8, "1 Gbit/s": 1e9 / 8}
"""Sustained download rates (bytes per second, by name) of :func:`download_plan`'s minutes."""


def download_plan(
    plates: Sequence[str],
    fields: Sequence[int],
    image_bytes: float,
    wells: Sequence[str] | None = None,
    metadata_folder: str | os.PathLike | None = None,
    bandwidths: Mapping[str, float] = BANDWIDTHS,
) -> pd.DataFrame:
    """What downloading a screen of ``plates`` takes, per plate and in total, from the design alone (no download).

    Per plate (in the order of ``plates``): its modality, cell type, time point and staining anomaly
    (:func:`cellstudy.data.cpjump1.plate_anomalies`), the ``fields`` selected of its non-empty wells (optionally
    only ``wells``; :func:`screen_field_table`), the images (five Cell Painting channels per field: the
    brightfield planes are not downloaded), ``GB`` (images × ``image_bytes``, the mean size of one channel TIFF,
    e.g. measured with :func:`cellstudy.data.images.tiff_bytes`) and the minutes at each of ``bandwidths``
    (``minutes at <name>``). The last row, ``total``, sums the counts, bytes and minutes. The Gallery may lack
    some of these fields (:func:`download_screen` skips them), so the counts are upper bounds.
    """
    table = screen_field_table(plates, ".", fields, wells, metadata_folder)
    plan = (
        table.groupby(PLATE, sort=False)
        .agg(
            **{column: (column, "first") for column in (MODALITY, CELL_TYPE, TIMEPOINT, ANOMALY)},
            fields=("field", "size"),
        )
        .reindex(list(dict.fromkeys(plates)))
        .reset_index()
    )
    plan["images"] = plan["fields"] * len(CHANNELS)
    total = plan[["fields", "images"]].sum().to_frame().T.assign(**{PLATE: "total"})
    plan = pd.concat([plan, total], ignore_index=True).astype({TIMEPOINT: "Int64", "fields": int, "images": int})
    plan["GB"] = plan["images"] * image_bytes / 1e9
    for name, rate in bandwidths.items():
        plan[f"minutes at {name}"] = plan["images"] * image_bytes / rate / 60
    return plan


def _wanted_images(table: pd.DataFrame, stains: Sequence[str]) -> pd.DataFrame:
    """One row per image of ``stains`` of each field of ``table``: plate, well, field, channel, file and path.

    File names follow each field's channel layout (:func:`cellstudy.data.images.field_channel_maps`).
    """
    rows = []
    fields = zip(table[[PLATE, *FIELD_KEY]].itertuples(index=False), field_channel_maps(table))
    for (plate, folder, well, field), channel_map in fields:
        paths = dict(zip(CHANNELS, channel_paths(folder, well, field, channel_map)))
        rows += [(plate, well, field, stain, paths[stain].name, paths[stain]) for stain in stains]
    return pd.DataFrame(rows, columns=[PLATE, "well", "field", "channel", "file", "path"])


def _sites(images: Mapping[str, GalleryObject]) -> dict[str, set[int]]:
    """Well name -> the field (site) numbers that have at least one image in ``images`` (file name -> object)."""
    sites: dict[str, set[int]] = {}
    for name in images:
        image = parse_name(name)
        sites.setdefault(well_id(image.row, image.col), set()).add(image.field)
    return sites


def _absence(plate_images: Mapping[str, GalleryObject], sites: Mapping[str, set[int]], image) -> tuple[str, str]:
    """Reason (:data:`SKIP_REASONS`) and detail why the wanted ``image`` (a row of :func:`_wanted_images`)
    is not in the bucket's listing of its plate; ``("", "")`` when it is there.
    """
    if image.file in plate_images:
        return "", ""
    if image.well not in sites:
        return WELL_ABSENT, "the bucket has no image of the well"
    if image.field not in sites[image.well]:
        return SITE_ABSENT, f"the well's sites in the bucket: {sorted(sites[image.well])}"
    return FILE_ABSENT, "the site's other images are in the bucket"


def _skipped_report(wanted: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``wanted`` with a reason, in :data:`SKIPPED_COLUMNS`."""
    return wanted.join(reasons)[reasons["reason"] != ""][SKIPPED_COLUMNS].reset_index(drop=True)


def _whole_fields(wanted: pd.DataFrame, flags: pd.Series) -> pd.Series:
    """For each image of ``wanted`` (:func:`_wanted_images`), whether ``flags`` holds for every image of its field."""
    return flags.groupby([wanted[PLATE], wanted["well"], wanted["field"]]).transform("all")


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

    The bucket's listing of each plate decides what can be had: a field that lacks one of its images
    there (its well is absent, the well has fewer sites, a channel file is missing) is skipped and none
    of its images is downloaded. The other images land in ``<dest>/<barcode>/`` (resumed file by file
    and retried, as in :func:`fetch_objects`); a field with an image that still fails is skipped too.
    Every skipped image is reported, one row each (:data:`SKIPPED_COLUMNS`), in
    ``<dest>/skipped_images.csv`` (:data:`SKIPPED_FILE`); then the field table of the fields that have
    every image on disk, the rows of :func:`screen_field_table` in its order, is written to
    ``<dest>/fields.csv`` (:data:`FIELD_TABLE_FILE`). Both are written atomically, the table last (an
    earlier table is deleted first), so that its presence means the download is finished.

    Parameters
    ----------
    plates
        CPJUMP1 plate barcodes (of :data:`~cellstudy.data.cpjump1.PAPER_BATCH`, e.g. ``BR00117010``).
    dest
        Download folder.
    fields
        Field (site) numbers downloaded per well.
    channels
        Stains downloaded, which every field of the table has (``None``: the five Cell Painting channels,
        which reading a field needs; never CPJUMP1's brightfield planes ch6-ch8).
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

    Returns
    -------
    The field table written.

    Raises
    ------
    FileNotFoundError
        A plate has no image folder, or no selected field is complete (the report is written, the
        table is not).
    ValueError
        ``layout`` is unknown, or as :func:`screen_field_table` (an empty or absent selection).
    """
    selected = with_layout(screen_field_table(plates, dest, fields, wells, metadata_folder), layout)
    table_path = Path(dest) / FIELD_TABLE_FILE
    table_path.unlink(missing_ok=True)  # from here on the folder no longer matches an earlier table
    wanted = _wanted_images(selected, CHANNELS if channels is None else channels)
    listings = {plate: plate_images(plate, config) for plate in wanted[PLATE].unique()}
    sites = {plate: _sites(images) for plate, images in listings.items()}
    reasons = pd.DataFrame(
        [_absence(listings[image.Metadata_Plate], sites[image.Metadata_Plate], image) for image in wanted.itertuples()],
        columns=["reason", "detail"],
        index=wanted.index,
    )
    listed = _whole_fields(wanted, reasons["reason"] == "")
    objects = {row.path: listings[row.Metadata_Plate][row.file] for row in wanted[listed].itertuples()}
    failures = fetch_objects(objects, config, n_threads, progress)
    failed = wanted["path"].isin(list(failures))
    reasons.loc[failed, "reason"] = DOWNLOAD_FAILED
    reasons.loc[failed, "detail"] = [
        f"{type(error).__name__}: {error}" for error in wanted["path"][failed].map(failures)
    ]
    with atomic_path(Path(dest) / SKIPPED_FILE) as temp_path:
        _skipped_report(wanted, reasons).to_csv(temp_path, index=False)
    on_disk = pd.Series([Path(path).is_file() for path in wanted["path"]], index=wanted.index)
    complete = wanted.loc[_whole_fields(wanted, (reasons["reason"] == "") & on_disk), [PLATE, "well", "field"]]
    keep = pd.MultiIndex.from_frame(selected[[PLATE, "well", "field"]]).isin(pd.MultiIndex.from_frame(complete))
    table = selected[keep].reset_index(drop=True)
    if table.empty:
        raise FileNotFoundError(
            f"none of the {len(selected)} selected field(s) of plates {list(plates)} could be downloaded "
            f"complete; the reasons are in {Path(dest) / SKIPPED_FILE}"
        )
    write_field_table(table, table_path)
    return table


def read_skipped(dest: str | os.PathLike) -> pd.DataFrame:
    """The report of skipped images that :func:`download_screen` wrote in ``dest`` (:data:`SKIPPED_COLUMNS`).

    Raises
    ------
    FileNotFoundError
        There is no report in ``dest`` (the message names the file).
    """
    path = Path(dest) / SKIPPED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"report of skipped images {path} does not exist: run download_screen first")
    return pd.read_csv(path, dtype={"well": str, "channel": str, "file": str, "reason": str, "detail": str})


def skipped_summary(dest: str | os.PathLike) -> pd.DataFrame:
    """Fields and images skipped per plate and reason, from the report in ``dest`` (no rows: none skipped)."""
    skipped = read_skipped(dest)
    keys = [PLATE, "reason"]
    fields = skipped.drop_duplicates([*keys, "well", "field"]).groupby(keys).size().rename("fields")
    images = skipped.groupby(keys).size().rename("images")
    return pd.concat([fields, images], axis=1).reset_index()


def screen_is_downloaded(dest: str | os.PathLike, expected: pd.DataFrame) -> bool:
    """Whether ``dest`` holds a finished download of the fields of ``expected`` (a :func:`screen_field_table`).

    True when the field table and the report of skipped images are there and every field of
    ``expected`` is either on the table or absent from the bucket; a field skipped because its download
    failed makes it False, so that the next :func:`download_screen` tries it again.
    """
    table_path, report_path = Path(dest) / FIELD_TABLE_FILE, Path(dest) / SKIPPED_FILE
    if not (table_path.is_file() and report_path.is_file()):
        return False
    skipped = read_skipped(dest)
    absent = skipped[skipped["reason"] != DOWNLOAD_FAILED]
    downloaded = read_field_table(table_path)
    settled = _field_keys(downloaded) | _field_keys(absent.assign(folder=[str(Path(dest) / p) for p in absent[PLATE]]))
    return settled == _field_keys(expected)


def _field_keys(table: pd.DataFrame) -> set[tuple[str, str, int]]:
    """The (folder, well, field) of each row of ``table``."""
    return {
        (str(folder), str(well), int(field)) for folder, well, field in table[list(FIELD_KEY)].itertuples(index=False)
    }


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
