"""Tests for cellstudy.data.gallery against moto's S3 server on loopback, filled in the Gallery's layout.

The bucket is as incomplete as the real one: eight images per site (five channels, three brightfield
planes), an index file, wells with 7, 9 and 16 sites, a well of the plate maps without images, a site
without one of its channel files, and a middleware in front of the server can make a file fail. A socket
guard refuses every connection that is not to 127.0.0.1, so nothing here reaches the internet.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import boto3
import numpy as np
import pandas as pd
import pytest

from cellstudy.data import cpjump1, fieldstore, gallery, gallery_mirror, published
from cellstudy.data.images import (
    CHANNELS,
    CPJUMP1_CHANNELS,
    LAYOUT,
    parse_well,
    phenix_name,
    read_field,
    write_field,
    write_tiff,
)
from cellstudy.data.sources import ChecksumError
from cellstudy.profiling import embed

moto_app = pytest.importorskip("moto.moto_server.werkzeug_app")
werkzeug_serving = pytest.importorskip("werkzeug.serving")

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
SITES = {("BR00116991", "A01"): 9, ("BR00116991", "D14"): 16, ("BR00116992", "A01"): 7, ("BR00116992", "D14"): 9}
"""Sites of each planted well (CPJUMP1's wells have 7, 8, 9 or 16)."""
BRIGHTFIELD = (6, 7, 8)
"""Channel numbers of the three brightfield planes of every CPJUMP1 site."""
ABSENT_WELL = "C03"
"""A well of the compound plate map with no image in the bucket."""
ABSENT_FILE = ("BR00116991", "D14", 2, "RNA")
"""The one channel file of a planted site that is not in the bucket."""
SHAPE = (24, 32)
LOOPBACK = "127.0.0.1"


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


class Faults:
    """WSGI middleware in front of moto: a GET of a key armed with :meth:`fail` sends the first half of the
    object's bytes and drops the connection, as a network failure mid-transfer (which botocore does not retry).
    """

    def __init__(self, app):
        self.app, self.failures, self.gets, self.lock = app, Counter(), Counter(), threading.Lock()

    def fail(self, key: str, times: int = 1) -> None:
        """Make the next ``times`` GETs of ``key`` fail."""
        with self.lock:
            self.failures[key] += times

    def __call__(self, environ, start_response):
        key = environ["PATH_INFO"].removeprefix(f"/{BUCKET}/")
        with self.lock:
            failing = environ["REQUEST_METHOD"] == "GET" and self.failures[key] > 0
            self.gets[key] += environ["REQUEST_METHOD"] == "GET"
            self.failures[key] -= failing
        if not failing:
            return self.app(environ, start_response)
        answer = {}
        body = b"".join(
            self.app(environ, lambda status, headers, exc_info=None: answer.update(status=status, headers=headers))
        )
        start_response(answer["status"], [*answer["headers"], ("Connection", "close")])
        return [body[: len(body) // 2]]


class S3Server(NamedTuple):
    """The local S3 server: its URL and its fault middleware."""

    url: str
    faults: Faults


@pytest.fixture(scope="module")
def s3_server(loopback_only) -> S3Server:
    faults = Faults(moto_app.DomainDispatcherApplication(moto_app.create_backend_app))
    server = werkzeug_serving.make_server(
        LOOPBACK, 0, faults, threaded=True, request_handler=moto_app.MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield S3Server(f"http://{LOOPBACK}:{server.server_port}", faults)
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def endpoint(s3_server) -> str:
    return s3_server.url


def planted_images(seed: int = 0) -> dict[tuple[str, str, int], np.ndarray]:
    """(plate, well, field) -> a random (5, H, W) uint16 image in CHANNELS order, for every site of SITES."""
    rng = np.random.default_rng(seed)
    return {
        (plate, well, field): rng.integers(0, 65535, size=(len(CHANNELS), *SHAPE), dtype=np.uint16)
        for (plate, well), sites in SITES.items()
        for field in range(1, sites + 1)
    }


def image_key(plate: str, well: str, field: int, channel: int) -> str:
    """The bucket key of one image."""
    return f"{IMAGES}{PLATE_FOLDERS[plate]}/Images/{phenix_name(*parse_well(well), field, channel)}"


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

    Every site has its five channels and three brightfield planes, but for :data:`ABSENT_FILE`.
    Returns the planted images, the uploaded bytes by key and the profile table.
    """
    source = tmp_path_factory.mktemp("source")
    images = planted_images()
    rng = np.random.default_rng(1)
    for (plate, well, field), image in images.items():
        write_field(source / PLATE_FOLDERS[plate], well, field, image)
        for channel in BRIGHTFIELD:
            plane = rng.integers(0, 65535, size=SHAPE, dtype=np.uint16)
            write_tiff(source / PLATE_FOLDERS[plate] / phenix_name(*parse_well(well), field, channel), plane)
    plate, well, field, stain = ABSENT_FILE
    (source / PLATE_FOLDERS[plate] / phenix_name(*parse_well(well), field, CPJUMP1_CHANNELS[stain])).unlink()
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_policy(Bucket=BUCKET, Policy=gallery_mirror.public_read_policy(BUCKET))
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
    return gallery.GalleryConfig(endpoint_url=endpoint, max_attempts=1, file_attempts=2, backoff_seconds=0.01)


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
        "BR00116991", tmp_path, wells=["D14"], fields=FIELDS, channels=["DNA", "Mito"], config=config
    )
    row, col = parse_well("D14")
    expected = sorted(
        phenix_name(row, col, field, CPJUMP1_CHANNELS[stain]) for field in FIELDS for stain in ("DNA", "Mito")
    )
    assert [path.name for path in paths] == expected
    assert sorted(path.name for path in (tmp_path / "BR00116991").iterdir()) == expected  # no temp files left
    folder = f"{IMAGES}{PLATE_FOLDERS['BR00116991']}/Images/"
    assert all(path.read_bytes() == bucket["uploaded"][folder + path.name] for path in paths)


def test_default_selection_is_the_five_channels_not_the_brightfield_planes(config, bucket, tmp_path):
    paths = gallery.download_plate_images("BR00116991", tmp_path, wells=["A01"], fields=[1], config=config)
    site = f"{IMAGES}{PLATE_FOLDERS['BR00116991']}/Images/r01c01f01p01-"
    in_bucket = [key for key in bucket["uploaded"] if key.startswith(site)]
    assert len(in_bucket) == len(CHANNELS) + len(BRIGHTFIELD)
    assert [path.name for path in paths] == [phenix_name(1, 1, 1, channel) for channel in range(1, 6)]


def test_selection_without_images_is_an_error(config, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"BR00116991.*P24"):
        gallery.download_plate_images("BR00116991", tmp_path, wells=["P24"], config=config)
    with pytest.raises(KeyError, match="Hoechst"):
        gallery.list_plate_images("BR00116991", channels=["Hoechst"], config=config)


def test_download_reads_back_and_resumes_file_by_file(config, bucket, tmp_path):
    paths = gallery.download_plate_images("BR00116992", tmp_path, config=config, n_threads=3)
    sites = [
        (well, field)
        for (plate, well), count in SITES.items()
        if plate == "BR00116992"
        for field in range(1, count + 1)
    ]
    assert len(paths) == len(sites) * len(CHANNELS)  # neither the brightfield planes nor the index file
    for well, field in sites:
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


def test_a_file_that_fails_once_arrives_on_the_retry(config, bucket, s3_server, tmp_path):
    key = image_key("BR00116992", "A01", 3, CPJUMP1_CHANNELS["ER"])
    gets = s3_server.faults.gets[key]
    s3_server.faults.fail(key)
    (path,) = gallery.download_plate_images(
        "BR00116992", tmp_path, wells=["A01"], fields=[3], channels=["ER"], config=config
    )
    assert path.read_bytes() == bucket["uploaded"][key]
    assert s3_server.faults.gets[key] - gets == 2  # the dropped transfer, then the retry
    assert list(path.parent.iterdir()) == [path]  # nothing left of the failed attempt


def test_retries_back_off_exponentially():
    assert gallery.retry_delays(gallery.GalleryConfig(file_attempts=4, backoff_seconds=0.5)) == [0.5, 1.0, 2.0]
    assert gallery.retry_delays(gallery.GalleryConfig(file_attempts=1)) == []


def test_md5_mismatch_is_rejected_after_every_attempt_and_nothing_is_left(config, bucket, s3_server, tmp_path):
    listed = gallery.list_plate_images("BR00116991", wells=["A01"], fields=[1], channels=["ER"], config=config)
    assert len(listed) == 1
    (obj,) = listed
    assert obj.etag == hashlib.md5(bucket["uploaded"][obj.key]).hexdigest()
    target = tmp_path / "ER.tiff"
    gets = s3_server.faults.gets[obj.key]
    with pytest.raises(ChecksumError, match=re.escape(obj.key)):
        gallery.download_objects({target: obj._replace(etag="0" * 32)}, config)
    assert s3_server.faults.gets[obj.key] - gets == config.file_attempts
    with pytest.raises(ChecksumError, match=re.escape(obj.key)):
        gallery.download_objects({target: obj._replace(size=obj.size + 1)}, config)
    assert list(tmp_path.iterdir()) == []
    multipart = obj._replace(etag="0" * 32 + "-2")  # a multipart ETag is no MD5: only the size is checked
    assert gallery.download_objects({target: multipart}, config) == [target]
    assert target.read_bytes() == bucket["uploaded"][obj.key]


def test_missing_object_error_names_the_key_and_is_not_retried(config, s3_server, tmp_path):
    key = f"{IMAGES}nowhere.tiff"
    with pytest.raises(FileNotFoundError, match=re.escape("nowhere.tiff")):
        gallery.download_objects({tmp_path / "x.tiff": gallery.GalleryObject(key, 10, "")}, config)
    assert s3_server.faults.gets[key] == 1


def test_a_failed_file_does_not_stop_the_others(config, bucket, s3_server, tmp_path):
    objects = {
        tmp_path / obj.key.rsplit("/", 1)[-1]: obj
        for obj in gallery.list_plate_images("BR00116992", wells=["D14"], fields=[4], config=config)
    }
    failing = sorted(objects)[1]
    s3_server.faults.fail(objects[failing].key, times=config.file_attempts)
    failures = gallery.fetch_objects(objects, config, n_threads=2, progress=False)
    assert list(failures) == [failing] and isinstance(failures[failing], OSError)
    assert sorted(tmp_path.iterdir()) == sorted(set(objects) - {failing})
    assert all(path.read_bytes() == bucket["uploaded"][objects[path].key] for path in tmp_path.iterdir())


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


def recorded_anomalies() -> dict[str, str]:
    """Plate -> the Anomaly column of experiment-metadata.tsv, batch 2020_11_04_CPJUMP1, read with csv."""
    with open(METADATA / "experiment-metadata.tsv", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return {row["Assay_Plate_Barcode"]: row["Anomaly"] for row in rows if row["Batch"] == "2020_11_04_CPJUMP1"}


def expected_screen(plates: list[str], dest: Path, fields: list[int], wells: list[str] = WELLS) -> pd.DataFrame:
    """The field table of ``wells`` of ``plates`` built row by row from the design, of the fields with every
    channel in the bucket."""
    design = cpjump1.well_table(METADATA, plates=plates)
    anomalies = recorded_anomalies()
    absent_field = ABSENT_FILE[:3]
    rows = [
        {
            **well.to_dict(),
            "Metadata_anomaly": anomalies[well["Metadata_Plate"]],
            "folder": str(dest / well["Metadata_Plate"]),
            "well": well["Metadata_Well"],
            "field": field,
        }
        for _, well in design[design["Metadata_Well"].isin(wells)].iterrows()
        for field in fields
        if field <= SITES.get((well["Metadata_Plate"], well["Metadata_Well"]), 0)
        and (well["Metadata_Plate"], well["Metadata_Well"], field) != absent_field
    ]
    return pd.DataFrame(rows)


def expected_skipped(plates: list[str], fields: list[int], wells: list[str]) -> pd.DataFrame:
    """The skipped-image report of a download of ``plates``, ``fields`` and ``wells``, from the planting."""
    rows = []
    for plate in plates:
        for well in sorted(wells, key=parse_well):
            for field in fields:
                reasons = {
                    stain: "well absent"
                    if (plate, well) not in SITES
                    else "site absent"
                    if field > SITES[(plate, well)]
                    else "file absent"
                    if (plate, well, field, stain) == ABSENT_FILE
                    else None
                    for stain in CHANNELS
                }
                rows += [
                    (plate, well, field, stain, phenix_name(*parse_well(well), field, CPJUMP1_CHANNELS[stain]), reason)
                    for stain, reason in reasons.items()
                    if reason
                ]
    return pd.DataFrame(rows, columns=["Metadata_Plate", "well", "field", "channel", "file", "reason"])


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
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [*plates, gallery.FIELD_TABLE_FILE, gallery.SKIPPED_FILE]
    )  # no temp files


def test_screen_skips_what_the_bucket_lacks_reports_it_and_keeps_complete_fields(config, bucket, s3_server, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    plates, fields, wells = list(PLATE_FOLDERS), [1, 2, 8], ["A01", ABSENT_WELL, "D14"]
    s3_server.faults.fail(image_key("BR00116992", "D14", 8, CPJUMP1_CHANNELS["DNA"]))
    table = gallery.download_screen(
        plates, tmp_path, fields, wells=wells, metadata_folder=METADATA, config=config, progress=False
    )
    pd.testing.assert_frame_equal(table, expected_screen(plates, tmp_path, fields, wells), check_dtype=False)
    assert not ((table["well"] == "D14") & (table["field"] == 2) & (table["Metadata_Plate"] == "BR00116991")).any()
    images, _ = embed.read_fields(table, progress=False)
    for image, key in zip(images, table[["Metadata_Plate", "well", "field"]].itertuples(index=False)):
        np.testing.assert_array_equal(image, bucket["images"][tuple(key)])

    skipped = gallery.read_skipped(tmp_path)
    expected = expected_skipped(plates, fields, wells)
    pd.testing.assert_frame_equal(skipped.drop(columns="detail"), expected, check_dtype=False)
    seven = skipped.query("Metadata_Plate == 'BR00116992' and well == 'A01'")["detail"]
    assert set(seven) == {"the well's sites in the bucket: [1, 2, 3, 4, 5, 6, 7]"}

    on_disk = {path.name for plate in plates for path in (tmp_path / plate).iterdir()}
    wanted = {
        phenix_name(*parse_well(well), field, CPJUMP1_CHANNELS[stain])
        for well, field in table[["well", "field"]].itertuples(index=False)
        for stain in CHANNELS
    }
    assert on_disk == wanted  # no brightfield plane, nothing of a skipped field
    summary = gallery.skipped_summary(tmp_path).set_index(["Metadata_Plate", "reason"])
    assert summary.loc[("BR00116991", "file absent")].tolist() == [1, 1]
    assert summary.loc[("BR00116992", "well absent")].tolist() == [3, 15]
    expected_fields = gallery.screen_field_table(plates, tmp_path, fields, wells, METADATA)
    assert gallery.screen_is_downloaded(tmp_path, expected_fields)


def test_screen_field_whose_download_fails_is_skipped_then_fetched_next_time(config, s3_server, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    selection = dict(wells=["A01"], metadata_folder=METADATA, config=config, progress=False)
    key = image_key("BR00116992", "A01", 5, CPJUMP1_CHANNELS["AGP"])
    s3_server.faults.fail(key, times=config.file_attempts)
    table = gallery.download_screen(["BR00116992"], tmp_path, [4, 5], **selection)
    assert table["field"].tolist() == [4]
    (failed,) = gallery.read_skipped(tmp_path).itertuples()
    assert (failed.well, failed.field, failed.channel, failed.reason) == ("A01", 5, "AGP", "download failed")
    assert key in failed.detail
    expected = gallery.screen_field_table(["BR00116992"], tmp_path, [4, 5], ["A01"], METADATA)
    assert not gallery.screen_is_downloaded(tmp_path, expected)  # a failed download is tried again

    assert gallery.download_screen(["BR00116992"], tmp_path, [4, 5], **selection)["field"].tolist() == [4, 5]
    assert gallery.read_skipped(tmp_path).empty
    assert gallery.screen_is_downloaded(tmp_path, expected)


def test_screen_without_a_complete_field_writes_the_report_and_no_table(config, bucket, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    (tmp_path / gallery.FIELD_TABLE_FILE).write_text("an earlier table")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / gallery.SKIPPED_FILE))):
        gallery.download_screen(
            ["BR00116991"], tmp_path, [17], wells=WELLS, metadata_folder=METADATA, config=config, progress=False
        )
    assert not (tmp_path / gallery.FIELD_TABLE_FILE).exists()
    assert set(gallery.read_skipped(tmp_path)["reason"]) == {"site absent"}
    assert len(gallery.read_skipped(tmp_path)) == len(WELLS) * len(CHANNELS)


def test_screen_in_another_layout_is_recorded_and_checked_in_it(config, bucket, tmp_path):
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    # The bucket holds CPJUMP1's ch1-ch8; in DAOY's layout ch5 and ch2 are DNA and ER, and AGP is ch3,
    # which field 2 of BR00116991 D14 lacks.
    selection = dict(wells=["D14"], metadata_folder=METADATA, config=config, layout="daoy", progress=False)
    table = gallery.download_screen(["BR00116991"], tmp_path, [1], channels=["DNA", "ER"], **selection)
    assert table[LAYOUT].tolist() == ["daoy"]
    assert fieldstore.read_field_table(tmp_path / gallery.FIELD_TABLE_FILE)[LAYOUT].tolist() == ["daoy"]
    assert sorted(path.name for path in (tmp_path / "BR00116991").iterdir()) == [
        phenix_name(4, 14, 1, 2),
        phenix_name(4, 14, 1, 5),
    ]
    table = gallery.download_screen(["BR00116991"], tmp_path / "all", [1, 2], **selection)
    assert table["field"].tolist() == [1]
    assert gallery.read_skipped(tmp_path / "all")[["field", "channel", "file"]].values.tolist() == [
        [2, "AGP", phenix_name(4, 14, 2, 3)]
    ]
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


def non_empty_wells(plate: str) -> int:
    """Wells of ``plate``'s plate map that hold something, read with csv from barcode_platemap.csv and the map: every
    well of a compound map (a blank sample is DMSO), the wells with a sample of a genetic one."""
    with open(METADATA / "barcode_platemap.csv", newline="") as handle:
        name = {row["Assay_Plate_Barcode"]: row["Plate_Map_Name"] for row in csv.DictReader(handle)}[plate]
    with open(METADATA / f"{name}.tsv", newline="") as handle:
        samples = [row["broad_sample"].strip() for row in csv.DictReader(handle, delimiter="\t")]
    return len(samples) if "compound" in name else sum(map(bool, samples))


def test_download_plan_counts_fields_images_bytes_and_minutes_per_plate():
    if not METADATA.is_dir():
        pytest.skip("shared CPJUMP1 metadata absent")
    plates, fields, image_bytes = ["BR00116996", "BR00117010", "BR00118039"], [1, 2, 3], 2.0e6
    plan = gallery.download_plan(plates, fields, image_bytes, metadata_folder=METADATA).set_index("Metadata_Plate")
    anomalies = recorded_anomalies()
    assert list(plan.index) == [*plates, "total"]
    assert list(plan.loc[plates, "Metadata_modality"]) == ["crispr", "compound", "orf"]
    assert list(plan.loc[plates, "Metadata_anomaly"]) == [anomalies[plate] for plate in plates]
    expected_fields = [non_empty_wells(plate) * len(fields) for plate in plates]
    assert list(plan.loc[plates, "fields"]) == expected_fields
    assert plan.loc["total", "images"] == 5 * sum(expected_fields)
    gigabytes = plan["images"] * image_bytes / 1e9
    np.testing.assert_allclose(plan["GB"], gigabytes)
    np.testing.assert_allclose(plan["minutes at 1 Gbit/s"], gigabytes * 8 / 60)  # 1 Gbit/s: 1/8 GB per second
    np.testing.assert_allclose(plan["minutes at 100 Mbit/s"], gigabytes * 80 / 60)
    only = gallery.download_plan(plates[:1], fields, image_bytes, wells=["A01", "B02"], metadata_folder=METADATA)
    assert list(only["fields"]) == [2 * len(fields)] * 2
