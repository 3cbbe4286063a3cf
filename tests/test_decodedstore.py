"""Tests for cellstudy.data.decodedstore: fields decoded once into memory-mappable files, read in place of TIFFs."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellstudy.columns import DECODED_FIELD
from cellstudy.data import decodedstore
from cellstudy.data.decodedstore import MANIFEST, convert_fields
from cellstudy.data.fieldstore import FieldStore, read_field_table, write_field_table
from cellstudy.data.images import DAOY_CHANNELS, list_fields, write_field

SHAPES = {("P1", "A01", 1): (64, 80), ("P1", "A01", 2): (72, 64), ("P2", "D14", 1): (64, 64)}
"""(plate, well, field) -> (H, W) of the planted fields."""


@pytest.fixture
def screen(tmp_path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """A field table of random uint16 fields over the full 16-bit range (P1 in CPJUMP1's channel layout, P2 in
    DAOY's), and the fields themselves.
    """
    rng = np.random.default_rng(0)
    tables, images = [], []
    for (plate, well, field), shape in SHAPES.items():
        image = rng.integers(0, 2**16, size=(5, *shape), dtype=np.uint16)
        layout = DAOY_CHANNELS if plate == "P2" else None
        write_field(tmp_path / "tiffs" / plate, well, field, image, *([layout] if layout else []))
        images.append(image)
    for plate in ("P1", "P2"):
        tables.append(list_fields(tmp_path / "tiffs" / plate, "daoy" if plate == "P2" else "cpjump1"))
    return pd.concat(tables, ignore_index=True).drop(columns=["row", "col", "channels"]), images


def no_decoding(monkeypatch) -> None:
    """Make any TIFF decoding by the conversion fail the test."""
    monkeypatch.setattr(decodedstore, "read_field", lambda *args: pytest.fail("a field was decoded"))


def test_decoded_fields_equal_the_tiffs_bit_for_bit(tmp_path, screen):
    table, images = screen
    converted = convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    pd.testing.assert_frame_equal(converted.drop(columns=DECODED_FIELD), table)
    for path, image in zip(converted[DECODED_FIELD], images):
        saved = np.load(path)  # an independent reader of the file
        assert saved.dtype == np.uint16 and saved.tobytes() == image.tobytes() and saved.shape == image.shape
    store = FieldStore(converted, progress=False)
    assert store.shapes == [image.shape for image in images]
    assert [store[i].tobytes() for i in range(len(store))] == [image.tobytes() for image in images]
    assert not store[0].flags.writeable  # a memory map of the file
    manifest = json.loads((tmp_path / "store" / MANIFEST).read_text())
    assert manifest["dtype"] == "uint16" and manifest["fields"] == 3
    assert manifest["bytes"] == sum(os.path.getsize(path) for path in converted[DECODED_FIELD])


def test_conversion_over_processes_writes_the_same_files(tmp_path, screen):
    table, _ = screen
    serial = convert_fields(table, tmp_path / "one", n_workers=1, progress=False)
    parallel = convert_fields(table, tmp_path / "two", n_workers=2, progress=False)
    for one, two in zip(serial[DECODED_FIELD], parallel[DECODED_FIELD]):
        assert os.path.relpath(one, tmp_path / "one") == os.path.relpath(two, tmp_path / "two")
        assert open(one, "rb").read() == open(two, "rb").read()


def test_conversion_resumes_with_the_fields_not_yet_decoded(tmp_path, screen, monkeypatch):
    table, images = screen
    first = convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    os.remove(first[DECODED_FIELD][1])
    (tmp_path / "store" / "P1" / ".A01-f02.npy.killed.tmp").write_bytes(b"half")  # left by a killed conversion
    decoded = []
    real = decodedstore.read_field
    monkeypatch.setattr(decodedstore, "read_field", lambda *args: decoded.append(args[:3]) or real(*args))
    again = convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    assert decoded == [(str(tmp_path / "tiffs" / "P1"), "A01", 2)]
    pd.testing.assert_frame_equal(again, first)
    assert not list((tmp_path / "store").rglob("*.tmp"))
    no_decoding(monkeypatch)
    store = FieldStore(convert_fields(table, tmp_path / "store", n_workers=1, progress=False), progress=False)
    assert store[1].tobytes() == images[1].tobytes()


def test_a_changed_tiff_or_layout_is_decoded_again_and_the_stale_file_deleted(tmp_path, screen):
    table, images = screen
    first = convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    changed = images[2][::-1].copy()
    write_field(tmp_path / "tiffs" / "P2", "D14", 1, changed, DAOY_CHANNELS)
    second = convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    assert second[DECODED_FIELD].tolist()[:2] == first[DECODED_FIELD].tolist()[:2]
    assert second[DECODED_FIELD][2] != first[DECODED_FIELD][2] and not os.path.exists(first[DECODED_FIELD][2])
    assert FieldStore(second, progress=False)[2].tobytes() == changed.tobytes()
    write_field(tmp_path / "tiffs" / "P1", "A01", 1, images[0], DAOY_CHANNELS)  # the same pixels, another layout
    relabelled = table.assign(channel_layout=["daoy", None, "daoy"])
    third = convert_fields(relabelled, tmp_path / "store", n_workers=1, progress=False)
    assert third[DECODED_FIELD][0] != second[DECODED_FIELD][0]
    assert FieldStore(third, progress=False)[0].tobytes() == images[0].tobytes()


def test_converted_table_survives_a_move_of_its_folder(tmp_path, screen):
    table, images = screen
    build = tmp_path / "build"
    shutil.copytree(tmp_path / "tiffs", build / "tiffs")
    table = table.assign(folder=[str(build / "tiffs" / os.path.basename(folder)) for folder in table["folder"]])
    converted = convert_fields(table, build / "store", n_workers=1, progress=False)
    write_field_table(converted, build / "fields.csv")
    assert not pd.read_csv(build / "fields.csv")[DECODED_FIELD].str.startswith("/").any()
    shutil.move(build, tmp_path / "moved")
    moved = read_field_table(tmp_path / "moved" / "fields.csv")
    assert all(path.startswith(str(tmp_path / "moved" / "store")) for path in moved[DECODED_FIELD])
    assert [item.tobytes() for item in FieldStore(moved, progress=False)] == [image.tobytes() for image in images]


def test_errors_name_the_file_and_the_field(tmp_path, screen):
    table, _ = screen
    converted = convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    path = converted[DECODED_FIELD][1]
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"decoded file .*A01-f02.* of field .*P1/A01/f02 is missing"):
        FieldStore(converted, progress=False)[1]
    np.save(path, np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"A01-f02.*P1/A01/f02 holds shape \(3, 8, 8\) dtype float32"):
        FieldStore(converted, progress=False)[1]
    with pytest.raises(ValueError, match=r"A01-f02.*P1/A01/f02 holds shape \(3, 8, 8\)"):
        _ = FieldStore(converted, progress=False).shapes
    (tmp_path / "tiffs" / "P1" / "r01c01f01p01-ch2sk1fk1fl1.tiff").unlink()
    with pytest.raises(FileNotFoundError, match="r01c01f01p01-ch2sk1fk1fl1.tiff"):
        convert_fields(table, tmp_path / "store", n_workers=1, progress=False)


def test_a_field_that_is_not_uint16_is_refused_by_the_conversion(tmp_path, screen):
    table, _ = screen
    for channel in range(1, 6):
        path = tmp_path / "tiffs" / "P1" / f"r01c01f01p01-ch{channel}sk1fk1fl1.tiff"
        tifffile.imwrite(path, np.zeros((64, 80), dtype=np.float32))
    with pytest.raises(ValueError, match=r"r01c01f01p01-ch\d.*float32, expected uint16"):
        convert_fields(table, tmp_path / "store", n_workers=1, progress=False)
    assert not list((tmp_path / "store").rglob("A01-f01-*"))
