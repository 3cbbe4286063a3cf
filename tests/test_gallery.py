"""Tests for cellstudy.data.gallery against moto's S3 server on loopback, filled in the Gallery's layout.

A socket guard refuses every connection that is not to 127.0.0.1, so nothing here reaches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from cellstudy.data import cpjump1, fieldstore, gallery, published
from cellstudy.data.images import (
    CHANNELS,
    CPJUMP1_CHANNELS,
    LAYOUT,
    parse_well,
    phenix_name,
    read_field,
    write_field,
)
from cellstudy.data.sources import ChecksumError
from cellstudy.profiling import embed

moto_server = pytest.importorskip("moto.server")

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cpjump1" / "metadata"
BUCKET = "cellpainting-gallery"
IMAGES = "cpg0000-jump-pilot/source_4/images/2020_11_04_CPJUMP1/images/"
PROFILES = "cpg0000-jump-pilot/source_4/workspace/profiles/2020_11_04_CPJUMP1/"
PLATE_FOLDERS = {
    "BR00116991": "BR00116991__2020-11-05T19_51_35-Measurement1",
    "BR00116992": "BR00116992__2020-11-05T21_31_31-Measurement1",
}
WELLS = ["A01", "D14"]
FIELDS = [1, 2]
SHAPE = (24, 32)
LOOPBACK = "127.0.0.1"
PUBLIC_READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ],
}
"""Anonymous read, as the Gallery's bucket allows."""


def _host(address) -> str:
    return address[0] if isinstance(address, tuple) else str(address)


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    """Refuse connections and name look-ups for anything but 127.0.0.1 while this module runs."""
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and _host(address) != LOOPBACK:
            raise ConnectionRefusedError(f"test guard: connection to {address} refused")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in (LOOPBACK, None):
            raise OSError(f"test guard: name look-up of {host} refused")
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded_connect)
        patch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "HTTPS_PROXY", "HTTP_PROXY"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def endpoint(loopback_only) -> str:
    server = moto_server.ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def planted_images(seed: int = 0) -> dict[tuple[str, str, int], np.ndarray]:
    """(plate, well, field) -> a random (5, H, W) uint16 image in CHANNELS order."""
    rng = np.random.default_rng(seed)
    return {
        (plate, well, field): rng.integers(0, 65535, size=(len(CHANNELS), *SHAPE), dtype=np.uint16)
        for plate in PLATE_FOLDERS
        for well in WELLS
        for field in FIELDS
    }


def planted_profiles() -> pd.DataFrame:
    """A few wells of BR00116991 from the design with two features, as in the published files."""
    wells = cpjump1.well_table(METADATA, plates=["BR00116991"], profiled_only=True).head(6)
    features = np.arange(len(wells) * 2, dtype=float).reshape(-1, 2) / 7
    return pd.DataFrame(
        {
            "Metadata_Plate": wells["Metadata_Plate"],
            "Metadata_Well": wells["Metadata_Well"],
            "Cells_AreaShape_Area": features[:, 0],
            "Nuclei_Intensity_MeanIntensity_DNA": features[:, 1],
        }
    )


@pytest.fixture(scope="module")
def bucket(endpoint, tmp_path_factory) -> dict:
    """Fill the server with two plates (plus a look-alike folder, an index file) and a profile file.

    Returns the planted images, the uploaded bytes by key and the profile table.
    """
    source = tmp_path_factory.mktemp("source")
    images = planted_images()
    for (plate, well, field), image in images.items():
        write_field(source / PLATE_FOLDERS[plate], well, field, image)
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(PUBLIC_READ))
    uploaded = {}
    for folder in PLATE_FOLDERS.values():
        for path in sorted((source / folder).iterdir()):
            uploaded[f"{IMAGES}{folder}/Images/{path.name}"] = path.read_bytes()
        uploaded[f"{IMAGES}{folder}/Images/Index.idx.xml"] = b"<EvaluationInputData/>"
    uploaded[f"{IMAGES}BR001169910__2020-11-06T10_00_00-Measurement1/Images/{phenix_name(1, 1, 1, 1)}"] = b"x"
    profiles = planted_profiles() if METADATA.is_dir() else pd.DataFrame({"Metadata_Plate": ["BR00116991"]})
    profile_key = f"{PROFILES}BR00116991/BR00116991{published.PROFILE_SUFFIX}"
    uploaded[profile_key] = gzip.compress(profiles.to_csv(index=False).encode(), mtime=0)
    for key, body in uploaded.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return {"images": images, "uploaded": uploaded, "profiles": profiles, "profile_key": profile_key}


@pytest.fixture(scope="module")
def config(endpoint, bucket) -> gallery.GalleryConfig:
    return gallery.GalleryConfig(endpoint_url=endpoint, max_attempts=1)


def inodes(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    """Inode and modification time of each file: a replaced file gets a new inode."""
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in paths}


def test_guard_refuses_other_hosts():
    with pytest.raises(OSError, match=re.escape("192.0.2.1")):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


def test_plate_folders_found_by_barcode_or_folder_name(config):
    folder = PLATE_FOLDERS["BR00116992"]
    assert gallery.plate_folders(["BR00116991", "BR00116992", folder], config) == {
        "BR00116991": f"{IMAGES}{PLATE_FOLDERS['BR00116991']}/",
        "BR00116992": f"{IMAGES}{folder}/",
        folder: f"{IMAGES}{folder}/",
    }


@pytest.mark.parametrize("barcode", ["BR09999999", "BR0011699"])
def test_unknown_barcode_error_names_it(config, barcode):
    with pytest.raises(FileNotFoundError, match=barcode):
        gallery.plate_folders(["BR00116991", barcode], config)


def test_filtered_download_fetches_only_the_selection(config, bucket, tmp_path):
    paths = gallery.download_plate_images(
        "BR00116991", tmp_path, wells=["D14"], channels=["DNA", "Mito"], config=config
    )
    row, col = parse_well("D14")
    expected = sorted(
        phenix_name(row, col, field, CPJUMP1_CHANNELS[stain]) for field in FIELDS for stain in ("DNA", "Mito")
    )
    assert [path.name for path in paths] == expected
    assert sorted(path.name for path in (tmp_path / "BR00116991").iterdir()) == expected  # no temp files left
    folder = f"{IMAGES}{PLATE_FOLDERS['BR00116991']}/Images/"
    assert all(path.read_bytes() == bucket["uploaded"][folder + path.name] for path in paths)


def test_selection_without_images_is_an_error(config, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"BR00116991.*P24"):
        gallery.download_plate_images("BR00116991", tmp_path, wells=["P24"], config=config)
    with pytest.raises(KeyError, match="Hoechst"):
        gallery.list_plate_images("BR00116991", channels=["Hoechst"], config=config)


def test_download_reads_back_and_resumes_file_by_file(config, bucket, tmp_path):
    paths = gallery.download_plate_images("BR00116992", tmp_path, config=config, n_threads=3)
    assert len(paths) == len(WELLS) * len(FIELDS) * len(CHANNELS)  # the index file is skipped
    for well in WELLS:
        for field in FIELDS:
            np.testing.assert_array_equal(
                read_field(tmp_path / "BR00116992", well, field), bucket["images"][("BR00116992", well, field)]
            )

    before = inodes(paths)
    assert gallery.download_plate_images("BR00116992", tmp_path, config=config) == paths
    assert inodes(paths) == before  # nothing downloaded again

    truncated = paths[3]
    original = truncated.read_bytes()
    truncated.write_bytes(original[: len(original) // 2])
    gallery.download_plate_images("BR00116992", tmp_path, config=config)
    assert truncated.read_bytes() == original
    after = inodes(paths)
    assert [path for path in paths if after[path] != before[path]] == [truncated]


def test_md5_mismatch_is_rejected_and_nothing_is_left(config, bucket, tmp_path):
    listed = gallery.list_plate_images("BR00116991", wells=["A01"], fields=[1], channels=["ER"], config=config)
    assert len(listed) == 1
    (obj,) = listed
    assert obj.etag == hashlib.md5(bucket["uploaded"][obj.key]).hexdigest()
    target = tmp_path / "ER.tiff"
    with pytest.raises(ChecksumError, match=re.escape(obj.key)):
        gallery.download_objects({target: obj._replace(etag="0" * 32)}, config)
    with pytest.raises(ChecksumError, match=re.escape(obj.key)):
        gallery.download_objects({target: obj._replace(size=obj.size + 1)}, config)
    assert list(tmp_path.iterdir()) == []
    multipart = obj._replace(etag="0" * 32 + "-2")  # a multipart ETag is no MD5: only the size is checked
    assert gallery.download_objects({target: multipart}, config) == [target]
    assert target.read_bytes() == bucket["uploaded"][obj.key]


def test_missing_object_error_names_the_key(config, tmp_path):
    missing = gallery.GalleryObject(f"{IMAGES}nowhere.tiff", 10, "")
    with pytest.raises(OSError, match=re.escape("nowhere.tiff")):
        gallery.download_objects({tmp_path / "x.tiff": missing}, config)


def test_profiles_land_where_published_reads_them(config, bucket, tmp_path):
    (path,) = gallery.download_profiles(["BR00116991"], tmp_path, config)
    assert path == tmp_path / "2020_11_04_CPJUMP1" / "BR00116991" / f"BR00116991{published.PROFILE_SUFFIX}"
    assert path.read_bytes() == bucket["uploaded"][bucket["profile_key"]]
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    loaded = published.load_published_profiles(tmp_path, plates=["BR00116991"], metadata_folder=METADATA)
    expected = bucket["profiles"]
    pd.testing.assert_frame_equal(
        loaded[expected.columns].reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
    )


def test_missing_profiles_error_names_the_plate(config, tmp_path):
    with pytest.raises(FileNotFoundError, match="BR00116992"):
        gallery.download_profiles(["BR00116991", "BR00116992"], tmp_path, config)


def expected_screen(plates: list[str], dest: Path, fields: list[int]) -> pd.DataFrame:
    """The field table of ``WELLS`` of ``plates`` built row by row from the design."""
    design = cpjump1.well_table(METADATA, plates=plates)
    rows = [
        {**well.to_dict(), "folder": str(dest / well["Metadata_Plate"]), "well": well["Metadata_Well"], "field": field}
        for _, well in design[design["Metadata_Well"].isin(WELLS)].iterrows()
        for field in fields
    ]
    return pd.DataFrame(rows)


def test_screen_download_returns_and_writes_the_field_table(config, bucket, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    plates = list(PLATE_FOLDERS)
    table = gallery.download_screen(
        plates, tmp_path, FIELDS, wells=WELLS, metadata_folder=METADATA, config=config, progress=False
    )
    pd.testing.assert_frame_equal(table, expected_screen(plates, tmp_path, FIELDS), check_dtype=False)
    images, _ = embed.read_fields(table, progress=False)
    for image, key in zip(images, table[["Metadata_Plate", "well", "field"]].itertuples(index=False)):
        np.testing.assert_array_equal(image, bucket["images"][tuple(key)])
    saved = fieldstore.read_field_table(tmp_path / gallery.FIELD_TABLE_FILE)
    pd.testing.assert_frame_equal(saved, table, check_dtype=False)  # a column of missing values reads back as float
    assert sorted(path.name for path in tmp_path.iterdir()) == [*plates, gallery.FIELD_TABLE_FILE]  # no temp files


def test_screen_with_a_missing_field_names_it_and_writes_no_table(config, bucket, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    with pytest.raises(FileNotFoundError, match=r"plate BR00116991 well A01 field 3 lacks \['DNA', 'ER'"):
        gallery.download_screen(
            ["BR00116991"], tmp_path, [1, 3], wells=["A01"], metadata_folder=METADATA, config=config, progress=False
        )
    assert not (tmp_path / gallery.FIELD_TABLE_FILE).exists()
    assert len(list((tmp_path / "BR00116991").iterdir())) == len(CHANNELS)  # field 1 was downloaded


def test_screen_in_another_layout_is_recorded_and_checked_in_it(config, bucket, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    # The bucket holds CPJUMP1's ch1-ch5; in DAOY's layout ch5 and ch2 are DNA and ER, and RNA (ch6) is absent.
    selection = dict(wells=["A01"], metadata_folder=METADATA, config=config, layout="daoy", progress=False)
    table = gallery.download_screen(["BR00116991"], tmp_path, [1], channels=["DNA", "ER"], **selection)
    assert table[LAYOUT].tolist() == ["daoy"]
    assert fieldstore.read_field_table(tmp_path / gallery.FIELD_TABLE_FILE)[LAYOUT].tolist() == ["daoy"]
    assert sorted(path.name for path in (tmp_path / "BR00116991").iterdir()) == [
        phenix_name(1, 1, 1, 2),
        phenix_name(1, 1, 1, 5),
    ]
    with pytest.raises(FileNotFoundError, match=r"plate BR00116991 well A01 field 1 lacks \['RNA'\]"):
        gallery.download_screen(["BR00116991"], tmp_path / "all", [1], **selection)
    with pytest.raises(ValueError, match=r"unknown channel layout 'cp9'; known layouts: \['cpjump1', 'daoy'\]"):
        gallery.download_screen(["BR00116991"], tmp_path / "none", [1], **{**selection, "layout": "cp9"})
    assert not (tmp_path / "none").exists()


def test_screen_selection_errors_name_the_well(tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    with pytest.raises(ValueError, match="Q01"):
        gallery.screen_field_table(["BR00116991"], tmp_path, [1], wells=["A01", "Q01"], metadata_folder=METADATA)
    empty = cpjump1.well_table(METADATA, ["BR00116996"]).query("Metadata_pert_type == 'empty'")["Metadata_Well"].iloc[0]
    with pytest.raises(ValueError, match=empty):
        gallery.screen_field_table(["BR00116996"], tmp_path, [1], wells=[empty], metadata_folder=METADATA)


def test_endpoint_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(gallery.ENDPOINT_VARIABLE, "http://127.0.0.1:5000")
    assert gallery.config_from_env() == gallery.GalleryConfig(endpoint_url="http://127.0.0.1:5000")
    monkeypatch.delenv(gallery.ENDPOINT_VARIABLE)
    assert gallery.config_from_env().endpoint_url is None
