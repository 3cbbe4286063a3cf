"""Tests for cellstudy.features.classical on planted label images, planted fields and a real CPJUMP1 field."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cellstudy.data import images
from cellstudy.data.images import CHANNELS
from cellstudy.data.sources import data_root
from cellstudy.features import classical, segmentation

IMAGES = data_root() / "cpjump1" / "images"
needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason="CPJUMP1 sample images not available")

ALL_FAMILIES = classical.FeatureFamilies(
    zernike=True,
    texture_objects=classical.OBJECTS,
    texture_scales=(3, 5),
    granularity_objects=("Cells",),
    granularity_spectrum_length=4,
    correlation_methods=("pearson", "manders_fold", "rwc"),
)
CHANNEL = "|".join(CHANNELS)
NAME = re.compile(
    rf"(Cells|Nuclei|Cytoplasm)_("
    rf"AreaShape_[A-Za-z]+(_\d+_\d+)?"
    rf"|Intensity_[A-Za-z]+_({CHANNEL})"
    rf"|Texture_[A-Za-z0-9]+_({CHANNEL})_\d+_\d\d_\d+"
    rf"|Granularity_\d+_({CHANNEL})"
    rf"|Correlation_[A-Za-z]+_({CHANNEL})_({CHANNEL}))"
)
"""CellProfiler's ``<Object>_<Category>_<Feature>_<Channel>`` names, per category."""


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def planted_labels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (5, 120, 160) image with three cells (labels 2, 5, 9; one square, two disks) and their nuclei.

    Cell 9's nucleus fills it entirely (no cytoplasm). Every object has its own
    intensity level per channel plus noise.
    """
    rng = np.random.default_rng(0)
    shape = (120, 160)
    cells = np.zeros(shape, np.int32)
    nuclei = np.zeros(shape, np.int32)
    cells[10:50, 10:60] = 2
    nuclei[20:35, 20:40] = 2
    cells[disk(shape, (80, 50), 22)] = 5
    nuclei[disk(shape, (82, 48), 9)] = 5
    cells[disk(shape, (60, 125), 12)] = 9
    nuclei[disk(shape, (60, 125), 12)] = 9
    image = rng.normal(300, 20, (len(CHANNELS), *shape))
    for labels in (cells, nuclei):
        for label in (2, 5, 9):
            image[:, labels == label] += rng.uniform(1000, 20000, (len(CHANNELS), 1))
    return np.clip(image, 0, 65535).astype(np.uint16), nuclei, cells


def planted_field(seed: int, n_cells: int = 9, size: int = 192) -> np.ndarray:
    """A (5, size, size) uint16 field of ``n_cells`` isolated round cells (radius 20) around nuclei (radius 9)."""
    rng = np.random.default_rng(seed)
    image = np.full((len(CHANNELS), size, size), 300.0)
    spacing = size // 3
    for index in range(n_cells):
        centre = np.array(divmod(index, 3)) * spacing + spacing / 2 + rng.uniform(-4, 4, 2)
        image[1:, disk((size, size), centre, 20)] += rng.uniform(2000, 5000, (len(CHANNELS) - 1, 1))
        image[0, disk((size, size), centre, 9)] += rng.uniform(4000, 9000)
    image += rng.normal(0, 40, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def test_areas_and_mean_intensities_match_numpy():
    image, nuclei, cells = planted_labels()
    table = classical.measure_field(image, nuclei, cells)
    assert table.index.tolist() == [2, 5, 9]
    cytoplasm = np.where(nuclei > 0, 0, cells)
    for label in (2, 5, 9):
        assert table.loc[label, "Cells_AreaShape_Area"] == np.sum(cells == label)
        assert table.loc[label, "Nuclei_AreaShape_Area"] == np.sum(nuclei == label)
        for index, channel in enumerate(CHANNELS):
            plane = image[index] / 65535
            assert table.loc[label, f"Cells_Intensity_MeanIntensity_{channel}"] == pytest.approx(
                plane[cells == label].mean(), rel=1e-9
            )
            assert table.loc[label, f"Nuclei_Intensity_MeanIntensity_{channel}"] == pytest.approx(
                plane[nuclei == label].mean(), rel=1e-9
            )
    for label in (2, 5):
        assert table.loc[label, "Cytoplasm_AreaShape_Area"] == np.sum(cytoplasm == label)
        expected = (image[CHANNELS.index("ER")] / 65535)[cytoplasm == label].mean()
        assert table.loc[label, "Cytoplasm_Intensity_MeanIntensity_ER"] == pytest.approx(expected, rel=1e-9)
    assert table.loc[9].filter(like="Cytoplasm_").isna().all()  # the nucleus fills the cell
    assert table.loc[9].filter(like="Cells_").notna().all()


def test_correlation_matches_pearson_and_is_one_with_itself():
    image, nuclei, cells = planted_labels()
    rng = np.random.default_rng(1)
    image[CHANNELS.index("ER")] = image[CHANNELS.index("DNA")]
    image[CHANNELS.index("RNA")] = rng.integers(0, 60000, image.shape[1:], dtype=np.uint16)
    table = classical.measure_field(image, nuclei, cells)
    np.testing.assert_allclose(table["Cells_Correlation_Correlation_DNA_ER"], 1.0, atol=1e-9)
    np.testing.assert_allclose(table["Cells_Correlation_Slope_DNA_ER"], 1.0, atol=1e-9)
    for label in (2, 5, 9):
        mask = cells == label
        expected = stats.pearsonr(image[0][mask].astype(float), image[CHANNELS.index("RNA")][mask].astype(float))[0]
        assert table.loc[label, "Cells_Correlation_Correlation_DNA_RNA"] == pytest.approx(expected, abs=1e-9)
        assert abs(expected) < 0.1


def test_vectorised_pearson_equals_cp_measure_including_degenerate_objects():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 12, (60, 70))
    labels[labels == 7] = 0
    labels[5, 5] = 7  # a one-pixel object
    first, second = rng.random((2, 60, 70))
    first[labels == 9] = 0.5  # constant in one channel: no correlation, no slope
    expected = classical._CORRELATION["pearson"](first, second, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fast = classical.pearson_by_object(first, second, labels)
    assert fast.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(fast[key], np.asarray(expected[key], dtype=float), rtol=1e-12, atol=1e-14)


def test_directional_correlations_are_named_first_channel_first():
    image, nuclei, cells = planted_labels()
    image[:] = 100
    cell = cells == 2
    left_half = cell & (np.arange(cells.shape[1]) < 35)
    image[CHANNELS.index("DNA")][cell] = 10000
    image[CHANNELS.index("ER")][left_half] = 10000
    families = classical.FeatureFamilies(correlation_methods=("manders_fold",), correlation_channels=("DNA", "ER"))
    table = classical.measure_field(image, nuclei, cells, families)
    assert table.loc[2, "Cells_Correlation_Manders_DNA_ER"] == pytest.approx(left_half.sum() / cell.sum())
    assert table.loc[2, "Cells_Correlation_Manders_ER_DNA"] == pytest.approx(1.0)


@pytest.mark.parametrize("families", [classical.DEFAULT_FAMILIES, ALL_FAMILIES], ids=["default", "all"])
def test_feature_names_follow_cellprofiler(families):
    image, nuclei, cells = planted_labels()
    names = classical.feature_names(families)
    assert len(set(names)) == len(names)
    assert [name for name in names if not NAME.fullmatch(name)] == []
    assert classical.measure_field(image, nuclei, cells, families).columns.tolist() == names
    assert "Cells_Texture_Contrast_ER_3_00_256" in names
    assert not any("Location" in name or "Center_" in name or "BoundingBoxM" in name for name in names)


def test_field_without_cells_gives_no_rows():
    image = np.full((len(CHANNELS), 64, 64), 200, np.uint16)
    table = classical.measure_field(image)
    assert table.empty and table.columns.tolist() == classical.feature_names()


def test_well_profile_is_the_median_over_cells():
    rng = np.random.default_rng(2)
    objects = pd.DataFrame(rng.normal(size=(7, 3)), columns=["Cells_A", "Cells_B", "Nuclei_C"])
    objects.iloc[2, 1] = np.nan
    profile = classical.well_profile(objects, n_fields=2)
    assert profile["Metadata_Count_Cells"] == 7 and profile["Image_Count_Cells"] == 3.5
    np.testing.assert_allclose(profile[objects.columns], np.nanmedian(objects.to_numpy(), axis=0))
    np.testing.assert_allclose(
        classical.well_profile(objects, agg="mean")[objects.columns], np.nanmean(objects.to_numpy(), axis=0)
    )
    with pytest.raises(ValueError, match="agg"):
        classical.well_profile(objects, agg="max")


def test_bad_inputs_are_named():
    image, nuclei, cells = planted_labels()
    with pytest.raises(ValueError, match="uint16"):
        classical.measure_field(image.astype(np.float32), nuclei, cells)
    with pytest.raises(ValueError, match="without their nuclei"):
        classical.measure_field(image, cells=cells)
    with pytest.raises(ValueError, match="shape"):
        classical.measure_field(image, nuclei[:-1], cells[:-1])
    with pytest.raises(ValueError, match="texture_channels.*GFP"):
        classical.FeatureFamilies(texture_channels=("GFP",))
    with pytest.raises(ValueError, match="correlation_methods"):
        classical.FeatureFamilies(correlation_methods=("spearman",))


@needs_images
def test_real_field_counts_cells_and_measures_every_feature():
    image = images.read_field(IMAGES / "DMSO", "D14")
    table = classical.measure_field(image)
    assert len(table) == segmentation.count_nuclei(image[CHANNELS.index("DNA")])
    assert 60 <= len(table) <= 200  # U2OS at CPJUMP1 density: about 100 cells per field
    assert table.columns[table.isna().all()].tolist() == []
    assert 800 < table["Nuclei_AreaShape_Area"].median() < 2000  # nuclei ~25-50 px across
    assert (table["Cells_AreaShape_Area"] > table["Nuclei_AreaShape_Area"]).mean() > 0.95


def test_measure_field_is_deterministic():
    image = planted_field(seed=3)
    pd.testing.assert_frame_equal(classical.measure_field(image), classical.measure_field(image))


@pytest.fixture(scope="module")
def field_table(tmp_path_factory) -> pd.DataFrame:
    """Five wells on two plates (one of them empty), two fields for one well."""
    root = tmp_path_factory.mktemp("fields")
    rows = []
    for seed, (plate, well, field) in enumerate(
        [("P1", "A01", 1), ("P1", "A01", 2), ("P1", "B02", 1), ("P2", "A01", 1), ("P2", "C03", 1), ("P1", "D04", 1)]
    ):
        image = planted_field(seed, n_cells=0 if well == "C03" else 3 + seed)
        images.write_field(root / plate, well, field, image)
        rows.append(
            {
                "folder": str(root / plate),
                "well": well,
                "field": field,
                "Metadata_Plate": plate,
                "Metadata_Well": well,
                "Metadata_row": images.parse_well(well)[0],
            }
        )
    return pd.DataFrame(rows)


def test_profile_fields_one_row_per_well_with_counts(field_table):
    with pytest.warns(UserWarning, match="C03"):
        profiles = classical.profile_fields(field_table, n_workers=1, progress=False)
    assert profiles[["Metadata_Plate", "Metadata_Well"]].values.tolist() == [
        ["P1", "A01"],
        ["P1", "B02"],
        ["P2", "A01"],
        ["P2", "C03"],
        ["P1", "D04"],
    ]
    assert profiles.columns.tolist() == [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_row",
        *classical.COUNT_COLUMNS,
        *classical.feature_names(),
    ]
    assert profiles["Metadata_row"].dtype == field_table["Metadata_row"].dtype
    assert profiles["Metadata_Count_Cells"].tolist() == [3 + 4, 5, 6, 0, 8]
    assert profiles["Image_Count_Cells"].tolist() == [3.5, 5, 6, 0, 8]
    empty = profiles["Metadata_Well"] == "C03"
    assert profiles.loc[empty, classical.feature_names()].isna().all(axis=None)
    assert profiles.loc[~empty, classical.feature_names()].notna().all(axis=None)
    first = field_table.iloc[[0, 1]]
    cells = pd.concat(
        [classical.measure_field(images.read_field(row.folder, row.well, row.field)) for row in first.itertuples()]
    )
    np.testing.assert_allclose(profiles.loc[0, classical.feature_names()].astype(float), cells.median())


def test_profile_fields_does_not_depend_on_workers(field_table):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = classical.profile_fields(field_table, n_workers=1, progress=False)
        parallel = classical.profile_fields(field_table, n_workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)


def test_profile_fields_reads_each_field_in_its_channel_layout(field_table, tmp_path):
    well = field_table.iloc[[0, 1]]  # P1 A01, two fields
    for row in well.itertuples():
        images.write_field(
            tmp_path, row.well, row.field, images.read_field(row.folder, row.well, row.field), images.DAOY_CHANNELS
        )
    daoy = well.assign(folder=str(tmp_path), **{images.LAYOUT: "daoy"})
    pd.testing.assert_frame_equal(
        classical.profile_fields(daoy, n_workers=1, progress=False),
        classical.profile_fields(well, n_workers=1, progress=False),
    )
    with pytest.raises(ValueError, match="'cp9'"):
        classical.profile_fields(daoy.assign(**{images.LAYOUT: "cp9"}), progress=False)


def test_profile_fields_names_bad_tables(field_table):
    with pytest.raises(KeyError, match="field"):
        classical.profile_fields(field_table.drop(columns="field"), progress=False)
    conflicting = field_table.assign(Metadata_Plate=["P1", "P9", "P1", "P2", "P2", "P1"])
    with pytest.raises(ValueError, match="A01"):
        classical.profile_fields(conflicting, progress=False)
