"""Tests for cellstudy.data.images: Phenix names, channel maps, TIFF and Zarr reading, composites."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cellstudy.data import images
from cellstudy.data.sources import data_root

IMAGES = data_root() / "cpjump1" / "images"
EXTRA = data_root() / "extra_images"
DAOY = EXTRA / "pediatric_atlas_DAOY"
ZARR = EXTRA / "jump_cpg0016_RAB30_zarr"

# Channel numbers written out from the data README, independently of the module's maps.
CPJUMP1_FILES = {"DNA": 5, "ER": 4, "RNA": 3, "AGP": 2, "Mito": 1}
DAOY_FILES = {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4}

needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason="CPJUMP1 sample images not available")


def random_field(seed: int = 0, shape: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, size=(5, *shape), dtype=np.uint16)


def test_study_channel_order():
    assert images.CHANNELS == ("DNA", "ER", "RNA", "AGP", "Mito")


def test_parse_name_reads_all_numbers():
    assert images.parse_name("r04c14f05p01-ch5sk1fk1fl1.tiff") == (4, 14, 5, 1, 5)
    assert images.parse_name("/some/folder/r12c09f05p02-ch10sk1fk1fl1.tiff") == (12, 9, 5, 2, 10)


@pytest.mark.parametrize("name", ["r4c14f05p01-ch5sk1fk1fl1.tiff", "r04c14f05p01-ch5.tiff", "notes.txt", ""])
def test_parse_name_rejects_other_names(name):
    with pytest.raises(ValueError, match="Phenix"):
        images.parse_name(name)


def test_phenix_name_round_trip():
    rng = np.random.default_rng(1)
    for row, col, field, plane, channel in rng.integers(1, 17, size=(50, 5)):
        name = images.phenix_name(row, col, field, channel, plane=plane)
        assert images.parse_name(name) == (row, col, field, plane, channel)
    assert images.phenix_name(4, 14, 5, 5) == "r04c14f05p01-ch5sk1fk1fl1.tiff"


def test_well_names_round_trip_on_a_384_well_plate():
    wells = [images.well_id(row, col) for row in range(1, 17) for col in range(1, 25)]
    assert wells[0] == "A01" and wells[-1] == "P24" and len(set(wells)) == 384
    assert [images.parse_well(well) for well in wells] == [(r, c) for r in range(1, 17) for c in range(1, 25)]
    assert images.well_id(4, 14) == "D14" and images.parse_well("D14") == (4, 14)
    assert images.parse_well("d8") == (4, 8)


@pytest.mark.parametrize("well", ["14D", "D", "DD14", "D0", "D123"])
def test_parse_well_rejects_bad_names(well):
    with pytest.raises(ValueError, match=well):
        images.parse_well(well)


def test_write_read_round_trip_is_lossless_lzw(tmp_path):
    image = random_field()
    paths = images.write_field(tmp_path, "D14", 5, image)
    np.testing.assert_array_equal(images.read_field(tmp_path, "D14", 5), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    for name, path in zip(images.CHANNELS, paths):
        assert path.name == f"r04c14f05p01-ch{CPJUMP1_FILES[name]}sk1fk1fl1.tiff"
        with tifffile.TiffFile(path) as tiff:
            assert tiff.pages.first.compression == tifffile.COMPRESSION.LZW
            np.testing.assert_array_equal(tiff.asarray(), image[images.CHANNELS.index(name)])


def test_write_field_follows_the_channel_map(tmp_path):
    image = random_field(seed=2)
    images.write_field(tmp_path, "C03", 3, image, channel_map=images.DAOY_CHANNELS)
    for name, channel in DAOY_FILES.items():
        plane = tifffile.imread(tmp_path / f"r03c03f03p01-ch{channel}sk1fk1fl1.tiff")
        np.testing.assert_array_equal(plane, image[images.CHANNELS.index(name)])
    np.testing.assert_array_equal(images.read_field(tmp_path, "C03", 3, images.DAOY_CHANNELS), image)


def test_write_field_overwrites_atomically(tmp_path):
    images.write_field(tmp_path, "A01", 1, random_field(seed=3))
    second = random_field(seed=4)
    images.write_field(tmp_path, "A01", 1, second)
    np.testing.assert_array_equal(images.read_field(tmp_path, "A01", 1), second)
    assert len(list(tmp_path.iterdir())) == 5


@pytest.mark.parametrize("image", [np.zeros((5, 8, 8), np.float32), np.zeros((4, 8, 8), np.uint16)])
def test_write_field_rejects_wrong_images(tmp_path, image):
    with pytest.raises(ValueError, match="well B02"):
        images.write_field(tmp_path, "B02", 1, image)


def test_list_fields_one_row_per_field(tmp_path):
    images.write_field(tmp_path, "B03", 1, random_field(seed=5))
    images.write_field(tmp_path, "B03", 2, random_field(seed=6))
    images.write_field(tmp_path, "P24", 9, random_field(seed=7), channel_map=images.DAOY_CHANNELS)
    (tmp_path / "r02c03f01p01-ch1sk1fk1fl1.tiff").unlink()
    (tmp_path / "notes.txt").write_text("not an image")
    table = images.list_fields(tmp_path)
    assert table[["row", "col", "well", "field"]].values.tolist() == [
        [2, 3, "B03", 1],
        [2, 3, "B03", 2],
        [16, 24, "P24", 9],
    ]
    assert table["channels"].tolist() == [(2, 3, 4, 5), (1, 2, 3, 4, 5), (2, 3, 4, 5, 6)]
    assert set(table["folder"]) == {str(tmp_path)}


def test_tiff_bytes_are_the_sizes_of_each_fields_five_channel_files(tmp_path):
    images.write_field(tmp_path / "a", "B03", 1, random_field(seed=5))
    images.write_field(tmp_path / "b", "C03", 3, random_field(seed=2), channel_map=images.DAOY_CHANNELS)
    (tmp_path / "a" / "r02c03f01p01-ch6sk1fk1fl1.tiff").write_bytes(b"brightfield, not counted")
    table = pd.concat([images.list_fields(tmp_path / "a"), images.list_fields(tmp_path / "b", "daoy")])
    a = sum(path.stat().st_size for path in (tmp_path / "a").glob("*ch[1-5]*.tiff"))
    b = sum(path.stat().st_size for path in (tmp_path / "b").glob("*.tiff"))
    assert images.tiff_bytes(table) == a + b > 0


def test_list_fields_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        images.list_fields(tmp_path / "nowhere")


def test_list_fields_records_a_layout_other_than_cpjump1(tmp_path):
    images.write_field(tmp_path, "C03", 3, random_field(seed=2), channel_map=images.DAOY_CHANNELS)
    assert images.LAYOUT not in images.list_fields(tmp_path).columns  # no column: CPJUMP1
    assert images.list_fields(tmp_path, "daoy")[images.LAYOUT].tolist() == ["daoy"]
    with pytest.raises(ValueError, match=r"unknown channel layout 'cp9'; known layouts: \['cpjump1', 'daoy'\]"):
        images.list_fields(tmp_path, "cp9")


def test_field_channel_maps_follow_the_layout_column():
    table = pd.DataFrame({"folder": ["a"] * 3, "well": ["A01"] * 3, "field": [1, 2, 3]})
    assert images.field_channel_maps(table) == [images.CPJUMP1_CHANNELS] * 3
    assert images.field_channel_maps(table.assign(**{images.LAYOUT: np.nan})) == [images.CPJUMP1_CHANNELS] * 3
    table[images.LAYOUT] = ["daoy", None, "cpjump1"]  # a row without a value is CPJUMP1 too
    assert images.field_channel_maps(table) == [images.DAOY_CHANNELS, images.CPJUMP1_CHANNELS, images.CPJUMP1_CHANNELS]
    with pytest.raises(ValueError, match=r"unknown channel layout 'cp9'; known layouts: \['cpjump1', 'daoy'\]"):
        images.field_channel_maps(table.assign(**{images.LAYOUT: ["daoy", "cp9", None]}))


def test_with_layout_fills_only_rows_without_one():
    table = pd.DataFrame({"well": ["A01", "B02"]})
    assert images.LAYOUT not in images.with_layout(table, "cpjump1").columns
    assert images.with_layout(table, "daoy")[images.LAYOUT].tolist() == ["daoy", "daoy"]
    mixed = table.assign(**{images.LAYOUT: [None, "cpjump1"]})
    assert images.with_layout(mixed, "daoy")[images.LAYOUT].tolist() == ["daoy", "cpjump1"]
    empty = table.assign(**{images.LAYOUT: np.nan})  # as a CSV reads back a column without values
    assert images.with_layout(empty, "daoy")[images.LAYOUT].tolist() == ["daoy", "daoy"]
    with pytest.raises(ValueError, match="'cp9'"):
        images.with_layout(table, "cp9")


@needs_images
def test_list_fields_on_the_real_images():
    table = images.list_fields(IMAGES / "FK-866")
    assert table["well"].tolist() == ["D08", "L09"]
    assert table["field"].tolist() == [5, 5]
    assert table["channels"].tolist() == [(1, 2, 3, 4, 5)] * 2


@needs_images
@pytest.mark.parametrize("folder, well", [("DMSO", "D14"), ("FK-866", "L09")])
def test_real_cpjump1_field_matches_the_raw_files(folder, well):
    image = images.read_field(IMAGES / folder, well)
    assert image.shape == (5, 1080, 1080) and image.dtype == np.uint16
    row, col = images.parse_well(well)
    for name, channel in CPJUMP1_FILES.items():
        raw = tifffile.imread(IMAGES / folder / f"r{row:02d}c{col:02d}f05p01-ch{channel}sk1fk1fl1.tiff")
        np.testing.assert_array_equal(image[images.CHANNELS.index(name)], raw)


@pytest.mark.skipif(not DAOY.is_dir(), reason="DAOY field not available")
def test_daoy_map_selects_the_right_files():
    image = images.read_field(DAOY, "C03", 3, images.DAOY_CHANNELS)
    for name, channel in DAOY_FILES.items():
        raw = tifffile.imread(DAOY / f"r03c03f03p01-ch{channel}sk1fk1fl1.tiff")
        np.testing.assert_array_equal(image[images.CHANNELS.index(name)], raw)
    brightfield = tifffile.imread(DAOY / "r03c03f03p01-ch1sk1fk1fl1.tiff")
    assert not any(np.array_equal(plane, brightfield) for plane in image)


def test_missing_channel_names_the_expected_file(tmp_path):
    images.write_field(tmp_path, "D14", 5, random_field())
    (tmp_path / "r04c14f05p01-ch3sk1fk1fl1.tiff").unlink()
    with pytest.raises(FileNotFoundError, match="r04c14f05p01-ch3sk1fk1fl1.tiff"):
        images.read_field(tmp_path, "D14", 5)


def test_non_uint16_channel_names_file_and_dtype(tmp_path):
    images.write_field(tmp_path, "D14", 5, random_field())
    tifffile.imwrite(tmp_path / "r04c14f05p01-ch2sk1fk1fl1.tiff", np.zeros((64, 48), np.float32))
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch2sk1fk1fl1\.tiff.*float32"):
        images.read_field(tmp_path, "D14", 5)


def truncate_to_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_written_file_is_named(tmp_path):
    images.write_field(tmp_path, "D14", 5, random_field(shape=(256, 256)))
    truncate_to_half(tmp_path / "r04c14f05p01-ch4sk1fk1fl1.tiff")
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch4sk1fk1fl1\.tiff.*truncated"):
        images.read_field(tmp_path, "D14", 5)


@needs_images
def test_truncated_real_file_is_named(tmp_path):
    for path in (IMAGES / "DMSO").glob("r04c14f05*.tiff"):
        shutil.copy(path, tmp_path / path.name)
    truncate_to_half(tmp_path / "r04c14f05p01-ch5sk1fk1fl1.tiff")
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch5sk1fk1fl1\.tiff"):
        images.read_field(tmp_path, "D14")


def test_garbage_file_is_named(tmp_path):
    images.write_field(tmp_path, "D14", 5, random_field())
    (tmp_path / "r04c14f05p01-ch1sk1fk1fl1.tiff").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch1sk1fk1fl1\.tiff"):
        images.read_field(tmp_path, "D14", 5)


def test_multi_page_tiff_is_refused_naming_the_file_and_its_pages(tmp_path):
    images.write_field(tmp_path, "D14", 5, random_field())
    stack = tmp_path / "r04c14f05p01-ch3sk1fk1fl1.tiff"
    tifffile.imwrite(stack, random_field(seed=8)[:3], photometric="minisblack")
    with tifffile.TiffFile(stack) as tiff:
        assert len(tiff.pages) == 3 and tiff.pages.first.shape == (64, 48)  # the first page alone looks like a channel
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch3sk1fk1fl1\.tiff.*3 pages"):
        images.read_tiff(stack)
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch3sk1fk1fl1\.tiff.*3 pages"):
        images.read_field(tmp_path, "D14", 5)


def test_shape_mismatch_names_the_file(tmp_path):
    images.write_field(tmp_path, "D14", 5, random_field())
    tifffile.imwrite(tmp_path / "r04c14f05p01-ch1sk1fk1fl1.tiff", np.zeros((10, 10), np.uint16))
    with pytest.raises(ValueError, match=r"r04c14f05p01-ch1sk1fk1fl1\.tiff.*\(10, 10\)"):
        images.read_field(tmp_path, "D14", 5)


def test_incomplete_channel_map_names_the_stain(tmp_path):
    with pytest.raises(KeyError, match="Mito"):
        images.read_field(tmp_path, "D14", 5, {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4})


@pytest.mark.skipif(not ZARR.is_dir(), reason="Zarr crops not available")
def test_zarr_sites_in_study_order():
    zarr = pytest.importorskip("zarr")
    with open(ZARR / "channels.csv", newline="") as handle:
        index = {row["channel"]: int(row["idx"]) for row in csv.DictReader(handle)}
    raw = zarr.open_array(ZARR / "images.zarr" / "images", mode="r")[:]
    sites = images.read_zarr_sites(ZARR)
    assert sites.shape == (2, 5, 384, 384) and sites.dtype == np.uint16
    for position, name in enumerate(images.CHANNELS):
        np.testing.assert_array_equal(sites[:, position], raw[:, index[name]])


def test_rescale_percentile_matches_the_formula():
    channel = np.random.default_rng(8).gamma(2.0, 500.0, size=(100, 100))
    lower, upper = np.percentile(channel, [2, 98])
    expected = np.clip((channel - lower) / (upper - lower), 0, 1)
    np.testing.assert_allclose(images.rescale_percentile(channel, 2, 98), expected, rtol=1e-5, atol=1e-6)
    assert images.rescale_percentile(np.full((4, 4), 7.0)).max() == 0.0


def test_composite_single_stain_keeps_its_colour():
    image = random_field(seed=9).astype(np.float32)
    rgb = images.composite_rgb(image, channels=("Mito",))
    colour = np.asarray(images.CHANNEL_COLOURS["Mito"])
    expected = images.rescale_percentile(image[4])[..., None] * colour / colour.max()
    np.testing.assert_allclose(rgb, expected, atol=1e-6)


def test_composite_is_bounded_and_puts_dna_in_blue():
    image = np.zeros((5, 32, 32), np.uint16)
    image[images.CHANNELS.index("DNA"), 8:16, 8:16] = 1000
    rgb = images.composite_rgb(image)
    assert rgb.shape == (32, 32, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[12, 12, 2] > rgb[12, 12, 1] > rgb[12, 12, 0] == 0
    assert rgb[0, 0].max() == 0
