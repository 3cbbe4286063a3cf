"""Rehearse the ``full`` run end to end on CPUs: ``make rehearse-full`` (``python tools/rehearse_full.py BUILD``).

1. Renders the simulated screen of the ``full-rehearsal`` run size (its plates are the ten plates of the
   ``full`` selection) and its classical profiles, post-processed as the paper's published files are.
2. Writes both in the Cell Painting Gallery's layout (:mod:`cellstudy.data.gallery_mirror`), leaves out
   what the real bucket lacks now and then (a whole well, one channel file of one site), and serves them
   from a local S3 server (moto) on 127.0.0.1.
3. Runs ``make reproduce SIZE=full-rehearsal`` against that server: notebooks 01-08 on the ``full`` path
   (download, published profiles, pre-training in two ``torchrun`` processes, no planted truth), then the
   book and its browser check.
4. Checks what a full run leaves behind: every notebook executed with its figures and results, its page in
   the book, the skipped-image report naming what was left out, no brightfield plane downloaded, and
   pre-training run by ``torchrun``.

It prints the seconds of each stage and exits non-zero on the first failed check.
"""

# ruff: noqa: E402 (progress bars are switched off before tqdm is first imported)

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import logging

import boto3
import pandas as pd
from moto.server import ThreadedMotoServer

from cellstudy.columns import NEGCON, PLATE, SOURCE_PLATE
from cellstudy.data import gallery, gallery_mirror
from cellstudy.data.images import CPJUMP1_CHANNELS, parse_name, parse_well, phenix_name, well_id
from cellstudy.features import classical
from cellstudy.profiling import profiles
from cellstudy.simulation import simulate
from cellstudy.study import Study
from cellstudy.study.runsize import FULL_REHEARSAL
from cellstudy.study.study import TRAINING_FIELDS
from cellstudy.training import distributed

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LOOPBACK = "127.0.0.1"
ABSENT_FILE_STAIN = "RNA"
"""The stain of the one channel file left out of the bucket (field 2 of the first compound treatment well)."""


def mirror_screen(build: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rehearsal's screen (rendered into ``<build>/mirror/screen``) under the real barcodes of its plates: its
    field table and its classical well profiles post-processed as the published ones are (per-plate
    MAD-robustized to DMSO, feature-selected).
    """
    study = Study.create(FULL_REHEARSAL, build)
    screen = simulate.simulate(study.simulation_config(), build / "mirror" / "screen", progress=False)
    fields = screen.field_table()
    wells = profiles.postprocess(classical.profile_fields(fields, n_workers=2), profiles.CLASSICAL_POSTPROCESSING)
    return as_real_plates(fields), as_real_plates(wells)


def as_real_plates(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each simulated plate (``SIM_<barcode>``) named by the real barcode it copies."""
    return table.assign(**{PLATE: table[SOURCE_PLATE]})


def left_out(fields: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The well left out of the bucket (the last treatment well of the last plate) and the field whose
    :data:`ABSENT_FILE_STAIN` file is (field 2 of the first treatment well of the first plate).
    """
    treated = fields[~fields[NEGCON]]
    return treated.iloc[-1], treated[treated["field"] == 2].iloc[0]


def write_bucket(build: Path, config: gallery.GalleryConfig) -> tuple[Path, pd.DataFrame]:
    """Write the mirror into ``<build>/mirror/bucket``; returns it and the table of what was left out."""
    fields, wells = mirror_screen(build)
    bucket = build / "mirror" / "bucket"
    shutil.rmtree(bucket, ignore_errors=True)
    folders = gallery_mirror.write_plate_images(fields, bucket, config)
    gallery_mirror.write_published_profiles(wells, profiles.feature_columns(wells), bucket, config)
    absent_well, absent_file = left_out(fields)
    for path in folders[absent_well[PLATE]].iterdir():
        if path.name != gallery_mirror.INDEX_FILE and well_of(path.name) == absent_well["well"]:
            path.unlink()
    name = phenix_name(*parse_well(absent_file["well"]), absent_file["field"], CPJUMP1_CHANNELS[ABSENT_FILE_STAIN])
    (folders[absent_file[PLATE]] / name).unlink()
    expected = pd.DataFrame(
        [
            (absent_well[PLATE], absent_well["well"], gallery.WELL_ABSENT),
            (absent_file[PLATE], absent_file["well"], gallery.FILE_ABSENT),
        ],
        columns=[PLATE, "well", "reason"],
    )
    return bucket, expected


def well_of(name: str) -> str:
    """The well of a Phenix file name (``r01c02f01p01-ch1sk1fk1fl1.tiff`` -> ``A02``)."""
    image = parse_name(name)
    return well_id(image.row, image.col)


def serve(bucket_folder: Path, config: gallery.GalleryConfig) -> tuple[ThreadedMotoServer, str]:
    """A moto S3 server on loopback holding the mirror in ``config.bucket``, readable without credentials."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3", endpoint_url=url, region_name=config.region, aws_access_key_id="rehearsal", aws_secret_access_key="x"
    )
    client.create_bucket(Bucket=config.bucket)
    client.put_bucket_policy(Bucket=config.bucket, Policy=gallery_mirror.public_read_policy(config.bucket))
    files = gallery_mirror.upload(bucket_folder, client, config.bucket)
    print(f"local Gallery at {url}: {files} files")
    return server, url


def reproduce(build: Path, endpoint: str) -> None:
    """``make reproduce SIZE=full-rehearsal`` into ``build`` (book in ``<build>/book_output``) against ``endpoint``."""
    environment = {**os.environ, gallery.ENDPOINT_VARIABLE: endpoint, "MPLBACKEND": "Agg"}
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        environment.pop(name, None)
    command = [
        "make",
        "reproduce",
        f"SIZE={FULL_REHEARSAL.name}",
        f"BUILD={build}",
        f"BOOK_OUT={build / 'book_output'}",
    ]
    subprocess.run(command, cwd=ROOT, env=environment, check=True)


def failures(build: Path, expected_skips: pd.DataFrame) -> list[str]:
    """What the rehearsal's build lacks, one line each (empty: every check passed)."""
    problems = []
    for notebook in NOTEBOOKS:
        stem = notebook.stem
        if not (build / "book" / "notebooks" / notebook.name).is_file():
            problems.append(f"{stem}: no executed notebook")
        if not list((build / "figures").glob(f"{stem}_*.png")):
            problems.append(f"{stem}: no figure in {build / 'figures'}")
        if not (build / "book_output" / "_build" / "html" / "notebooks" / f"{stem}.html").is_file():
            problems.append(f"{stem}: no page in the book")
    study = Study.create(FULL_REHEARSAL, build)
    skipped = gallery.read_skipped(study.gallery_dir)
    reported = skipped[[PLATE, "well", "reason"]].drop_duplicates()
    missing = expected_skips.merge(reported, how="left", indicator=True).query("_merge == 'left_only'")
    problems += [
        f"skipped-image report lacks {row.well} of {row.Metadata_Plate} ({row.reason})" for row in missing.itertuples()
    ]
    brightfield = [
        p
        for p in study.gallery_dir.rglob("*.tiff")
        if parse_name(p.name).channel in gallery_mirror.BRIGHTFIELD_CHANNELS
    ]
    problems += [f"brightfield plane downloaded: {path}" for path in brightfield[:3]]
    for method in ("mae", "dino"):
        model = study.model_dir(method)
        if not ((model / TRAINING_FIELDS).is_file() and (model / distributed.REQUESTED_CONFIG).is_file()):
            problems.append(f"{method}: not pre-trained by torchrun (no {TRAINING_FIELDS} in {model})")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Build the mirror, serve it, run the study against it, check the build; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="build folder of the rehearsal (emptied first)")
    build = parser.parse_args(argv).build.resolve()
    shutil.rmtree(build, ignore_errors=True)
    config = gallery.GalleryConfig()
    start = time.perf_counter()
    bucket, expected_skips = write_bucket(build, config)
    written = time.perf_counter()
    server, url = serve(bucket, config)
    try:
        reproduce(build, url)
    finally:
        server.stop()
    ran = time.perf_counter()
    problems = failures(build, expected_skips)
    print(
        f"rehearsal: local Gallery written in {written - start:.0f} s, notebooks and book in {ran - written:.0f} s, "
        f"{ran - start:.0f} s in all"
    )
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print(f"every check passed: {len(NOTEBOOKS)} notebooks, their figures and book pages, the skipped-image report")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
