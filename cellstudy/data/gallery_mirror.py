"""A local copy of the Cell Painting Gallery's CPJUMP1 layout, to rehearse the ``full`` run without AWS.

:func:`write_plate_images` and :func:`write_published_profiles` write a screen's fields and well profiles as
the Gallery stores them (:mod:`cellstudy.data.gallery`), in a folder whose paths below it are the bucket's
keys::

    <root>/cpg0000-jump-pilot/source_4/images/<batch>/images/<barcode>__<time>-Measurement1/Images/
        r01c01f01p01-ch1sk1fk1fl1.tiff ... -ch8sk1fk1fl1.tiff, Index.idx.xml
    <root>/cpg0000-jump-pilot/source_4/workspace/profiles/<batch>/<barcode>/<barcode>_normalized_feature_select_negcon_batch.csv.gz

Every site has eight images, as in CPJUMP1: the five Cell Painting channels (ch1 Mito, ch2 AGP, ch3 RNA,
ch4 ER, ch5 DNA) and three brightfield planes (ch6-ch8); every plate folder has the microscope's index file.
The published files carry the metadata as the real ones do (:func:`published_metadata`: no
``broad_sample`` for DMSO, the target instead of the design's target list). :func:`upload` copies the folder
into a bucket, e.g. of a local S3 server, which :func:`public_read_policy` opens to unsigned reads.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from botocore.client import BaseClient

from cellstudy.columns import PLATE, WELL
from cellstudy.data import cpjump1
from cellstudy.data.gallery import IMAGES_FOLDER, PLATE_SEPARATOR, GalleryConfig
from cellstudy.data.images import parse_well, phenix_name, read_field, write_field, write_tiff
from cellstudy.data.published import PROFILE_SUFFIX
from cellstudy.files import atomic_path

BRIGHTFIELD_CHANNELS = (6, 7, 8)
"""Channel numbers of the three brightfield planes of every CPJUMP1 site (never read by the study)."""
INDEX_FILE = "Index.idx.xml"
"""The microscope's index file in every plate's image folder."""
FIRST_ACQUISITION = datetime(2020, 11, 5, 19, 51, 35)
"""Acquisition time of the first plate written; each further plate is an hour later."""


def plate_folder_name(barcode: str, acquired: datetime) -> str:
    """``BR00116991__2020-11-05T19_51_35-Measurement1``: the barcode, two underscores, the acquisition time."""
    return f"{barcode}{PLATE_SEPARATOR}{acquired:%Y-%m-%dT%H_%M_%S}-Measurement1"


def plate_image_folder(root: str | os.PathLike, barcode: str, acquired: datetime, config: GalleryConfig) -> Path:
    """Where the images of plate ``barcode`` go under ``root`` (the bucket's key prefix as folders)."""
    return Path(root) / config.images_prefix / plate_folder_name(barcode, acquired) / IMAGES_FOLDER


def brightfield_planes(image: np.ndarray) -> np.ndarray:
    """Three stand-in brightfield planes of a (5, H, W) field: the mean of its channels, dimmed by focus plane."""
    mean = image.astype(np.float64).mean(axis=0)
    return np.stack([mean / (1 + plane) for plane in range(len(BRIGHTFIELD_CHANNELS))]).astype(np.uint16)


def write_plate_images(fields: pd.DataFrame, root: str | os.PathLike, config: GalleryConfig) -> dict[str, Path]:
    """Write every field of a field table (``Metadata_Plate``, ``folder``, ``well``, ``field``) in the layout.

    The plates get acquisition times an hour apart from :data:`FIRST_ACQUISITION`, in order of barcode.
    Returns the image folder of each plate.
    """
    plates = sorted(fields[PLATE].unique())
    folders = {
        plate: plate_image_folder(root, plate, FIRST_ACQUISITION + timedelta(hours=hour), config)
        for hour, plate in enumerate(plates)
    }
    for row in fields.itertuples():
        image = read_field(row.folder, row.well, row.field)
        folder = folders[getattr(row, PLATE)]
        write_field(folder, row.well, row.field, image)
        for channel, plane in zip(BRIGHTFIELD_CHANNELS, brightfield_planes(image)):
            write_tiff(folder / phenix_name(*parse_well(row.well), row.field, channel), plane)
    for folder in folders.values():
        (folder / INDEX_FILE).write_text('<?xml version="1.0" encoding="utf-8"?>\n<EvaluationInputData/>\n')
    return folders


def published_metadata(wells: pd.DataFrame) -> pd.DataFrame:
    """Metadata of design wells as the published files carry it: no broad_sample for DMSO and empty wells, no
    cell type or time point, the first annotated target, and the assay plate barcode.
    """
    solvent_or_empty = wells["Metadata_broad_sample"].isin(["DMSO", cpjump1.EMPTY_WELL])
    return pd.DataFrame(
        {
            PLATE: wells[PLATE],
            WELL: wells[WELL],
            "Metadata_Assay_Plate_Barcode": wells[PLATE],
            "Metadata_broad_sample": wells["Metadata_broad_sample"].mask(solvent_or_empty),
            "Metadata_pert_type": wells["Metadata_pert_type"].mask(wells["Metadata_pert_type"] == "empty"),
            "Metadata_control_type": wells["Metadata_control_type"],
            "Metadata_target": wells["Metadata_target_list"].str.split("|").str[0],
        }
    )


def published_profile_path(root: str | os.PathLike, barcode: str, config: GalleryConfig) -> Path:
    """Where the published profiles of plate ``barcode`` go under ``root``."""
    return Path(root) / config.profiles_prefix / barcode / f"{barcode}{PROFILE_SUFFIX}"


def write_published_profiles(
    wells: pd.DataFrame, features: list[str], root: str | os.PathLike, config: GalleryConfig
) -> list[Path]:
    """Write one published profile file per plate of ``wells`` (design metadata and ``features``), gzip-compressed.

    Each holds :func:`published_metadata` and the feature columns, as the Gallery's
    ``..._normalized_feature_select_negcon_batch.csv.gz`` files.
    """
    table = pd.concat([published_metadata(wells), wells[features]], axis=1)
    paths = []
    for plate, rows in table.groupby(PLATE, sort=True):
        path = published_profile_path(root, plate, config)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(gzip.compress(rows.to_csv(index=False).encode(), mtime=0))
        paths.append(path)
    return paths


def mirrored_files(root: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """(bucket key, file) of every file under ``root``, in sorted order."""
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def upload(root: str | os.PathLike, client: BaseClient, bucket: str) -> int:
    """Put every file under ``root`` into ``bucket`` (which must exist) under its key; returns the files put."""
    count = 0
    for key, path in mirrored_files(root):
        client.upload_file(str(path), bucket, key)
        count += 1
    return count


def public_read_policy(bucket: str) -> str:
    """A bucket policy (JSON) that lets anyone list and read ``bucket``, as the Gallery's does."""
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})
