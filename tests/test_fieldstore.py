"""Tests for cellstudy.data.fieldstore: field tables on disk, and fields read on demand for training."""

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from cellstudy.data import fieldstore
from cellstudy.data.fieldstore import FieldStore, read_field_table, write_field_table
from cellstudy.data.images import CPJUMP1_CHANNELS, DAOY_CHANNELS, LAYOUT, list_fields, read_field, write_field
from cellstudy.training.crops import (
    ChannelStats,
    CropConfig,
    CropDataset,
    compute_channel_stats,
)

SHAPES = {("P1", "A01", 1): (64, 80), ("P1", "A01", 2): (72, 64), ("P2", "D14", 1): (64, 64)}
"""(plate, well, field) -> (H, W) of the planted fields."""


def planted_field(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A (5, H, W) uint16 field with bright DNA spots on a Poisson background."""
    rng = np.random.default_rng(seed)
    field = rng.poisson(100, size=(5, *shape)).astype(np.uint16)
    spots = rng.random(shape) < 0.05
    field[0][spots] += 3000
    return field


@pytest.fixture
def screen(tmp_path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """A field table of the planted fields (written under ``tmp_path/screen``) and the fields themselves."""
    rows, images = [], []
    for seed, ((plate, well, field), shape) in enumerate(SHAPES.items()):
        image = planted_field(shape, seed)
        write_field(tmp_path / "screen" / plate, well, field, image)
        rows.append({"Metadata_Plate": plate, "folder": str(tmp_path / "screen" / plate), "well": well, "field": field})
        images.append(image)
    return pd.DataFrame(rows), images


def test_field_table_folders_are_stored_relative_and_survive_a_move(tmp_path, screen):
    table, images = screen
    path = write_field_table(table, tmp_path / "screen" / "fields.csv")
    assert pd.read_csv(path)["folder"].tolist() == ["P1", "P1", "P2"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    pd.testing.assert_frame_equal(read_field_table(path), table)
    shutil.move(tmp_path / "screen", tmp_path / "moved")
    moved = read_field_table(tmp_path / "moved" / "fields.csv")
    assert moved["folder"].tolist() == [str(tmp_path / "moved" / plate) for plate in table["Metadata_Plate"]]
    np.testing.assert_array_equal(read_field(moved["folder"][2], "D14", 1), images[2])


def test_field_table_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"folder": ["x"], "well": ["A01"]}).to_csv(bad, index=False)
    with pytest.raises(KeyError, match=r"bad\.csv.*\['field'\]"):
        read_field_table(bad)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_field_table(tmp_path / "absent.csv")


def test_store_items_are_the_fields_read_from_disk(tmp_path, screen):
    table, images = screen
    store = FieldStore(write_field_table(table, tmp_path / "screen" / "fields.csv"), progress=False)
    assert len(store) == len(images)
    for index, image in enumerate(images):
        item = store[index]
        assert item.dtype == np.uint16 and np.array_equal(item, image)
    assert np.array_equal(store[-1], images[-1])
    assert [np.array_equal(a, b) for a, b in zip(store, images)] == [True] * len(images)  # iteration stops at the end
    with pytest.raises(IndexError):
        store[len(images)]
    with pytest.raises(TypeError):
        store[0:2]
    assert store.names == [
        f"{folder}/{well}/f{field:02d}"
        for folder, well, field in table[["folder", "well", "field"]].itertuples(index=False)
    ]
    restored = pickle.loads(pickle.dumps(store))  # as DataLoader workers receive it
    assert np.array_equal(restored[1], images[1])


def test_store_reads_each_row_in_its_channel_layout(tmp_path, screen):
    table, images = screen
    for (well, field), image in zip(table[["well", "field"]].itertuples(index=False), images):
        write_field(tmp_path / "daoy", well, field, image, DAOY_CHANNELS)
    daoy = list_fields(tmp_path / "daoy", "daoy")  # sorted by well and field: the screen's order
    path = write_field_table(pd.concat([table, daoy], ignore_index=True), tmp_path / "fields.csv")
    assert read_field_table(path)[LAYOUT].tolist()[len(table) :] == ["daoy"] * len(table)
    store = FieldStore(path, progress=False)  # the screen's rows name no layout: CPJUMP1
    assert [item.tobytes() for item in store] == [image.tobytes() for image in images * 2]
    assert store.shapes == [image.shape for image in images * 2]
    with pytest.raises(FileNotFoundError, match="r01c01f01p01-ch1"):  # read as CPJUMP1, the DAOY files lack ch1
        FieldStore(daoy.drop(columns=LAYOUT), progress=False)[0]


def test_table_without_a_layout_reads_as_cpjump1(screen):
    table, images = screen
    store = FieldStore(table, progress=False)
    assert LAYOUT not in table.columns and store.channel_maps == [CPJUMP1_CHANNELS] * len(table)
    assert [store[index].tobytes() for index in range(len(store))] == [
        read_field(folder, well, field, CPJUMP1_CHANNELS).tobytes()
        for folder, well, field in table[["folder", "well", "field"]].itertuples(index=False)
    ]


def test_unknown_layout_is_named(screen):
    table, _ = screen
    with pytest.raises(ValueError, match=r"unknown channel layout 'cp9'; known layouts: \['cpjump1', 'daoy'\]"):
        FieldStore(table.assign(**{LAYOUT: ["cpjump1", "cp9", None]}), progress=False)


def test_shapes_come_from_headers_without_reading_pixels(screen, monkeypatch):
    table, images = screen
    store = FieldStore(table, progress=False)
    monkeypatch.setattr(fieldstore, "read_field", lambda *args: pytest.fail("pixels read"))
    assert store.shapes == [image.shape for image in images]


def test_missing_first_channel_is_named(screen, tmp_path):
    table, _ = screen
    (tmp_path / "screen" / "P2" / "r04c14f01p01-ch5sk1fk1fl1.tiff").unlink()  # DNA, the channel shapes reads
    with pytest.raises(FileNotFoundError, match="r04c14f01p01-ch5"):
        _ = FieldStore(table, progress=False).shapes


def counting_store(table: pd.DataFrame, monkeypatch) -> tuple[FieldStore, list]:
    """A store of ``table`` and the list of (folder, well, field) it has read so far."""
    reads = []
    real = fieldstore.read_field
    monkeypatch.setattr(fieldstore, "read_field", lambda *args: reads.append(args[:3]) or real(*args))
    return FieldStore(table, progress=False), reads


def test_crop_dataset_over_a_store_gives_the_same_samples_without_loading_up_front(screen, monkeypatch):
    table, images = screen
    config = CropConfig(global_size=32, region_size=48, n_global=2, n_local=2, local_size=16)
    stats = compute_channel_stats(images)
    store, reads = counting_store(table, monkeypatch)
    lazy = CropDataset(store, config, stats, seed=3, names=store.names)
    assert reads == []
    in_memory = CropDataset(images, config, stats, seed=3)
    for index in range(12):
        lazy_item, memory_item = lazy[index], in_memory[index]
        assert lazy_item["seed"] == memory_item["seed"]
        assert all(a.numpy().tobytes() == b.numpy().tobytes() for a, b in zip(lazy_item["views"], memory_item["views"]))
    assert len(reads) == 12  # one field read per sample


def test_crop_dataset_checks_a_store_from_its_shapes(screen, monkeypatch):
    table, _ = screen
    store, reads = counting_store(table, monkeypatch)
    with pytest.raises(ValueError, match=r"P1/A01/f01: expected a \(C, H, W\) field at least 72 px"):
        CropDataset(
            store,
            CropConfig(global_size=64, region_size=72),
            ChannelStats([0.0] * 5, [1.0] * 5, [1.0] * 5),
            names=store.names,
        )
    assert reads == []


def test_channel_stats_over_a_store_equal_those_in_memory(screen):
    table, images = screen
    assert compute_channel_stats(FieldStore(table, progress=False), pixels_per_field=1000) == compute_channel_stats(
        images, pixels_per_field=1000
    )
