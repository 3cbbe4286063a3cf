"""Tests for cellstudy.data.gallery_mirror: a mirror written here is read back by cellstudy.data.gallery and
cellstudy.data.published (checked against the Gallery's documented layout) as the fields and profiles written."""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from cellstudy.data import cpjump1, gallery, gallery_mirror, published
from cellstudy.data.images import read_field, write_field
from cellstudy.profiling import embed

moto = pytest.importorskip("moto")

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cpjump1" / "metadata"
pytestmark = pytest.mark.skipif(not METADATA.is_dir(), reason="shared CPJUMP1 metadata absent")
PLATES = ["BR00117010", "BR00116996"]  # compound, CRISPR
FEATURES = ["Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA"]


@pytest.fixture(scope="module")
def design() -> pd.DataFrame:
    """Three wells of each plate, one of them a DMSO or non-targeting control."""
    wells = cpjump1.well_table(METADATA, plates=PLATES)
    wells = wells[wells["Metadata_pert_type"] != cpjump1.EMPTY_WELL]
    return wells.groupby("Metadata_Plate").head(3).reset_index(drop=True)


@pytest.fixture(scope="module")
def source(design, tmp_path_factory) -> pd.DataFrame:
    """A field table of two random 5-channel fields per design well, written as the simulator writes them."""
    folder, rng = tmp_path_factory.mktemp("screen"), np.random.default_rng(0)
    rows = []
    for well in design.itertuples():
        for field in (1, 2):
            image = rng.integers(0, 65535, size=(5, 12, 16), dtype=np.uint16)
            write_field(folder / well.Metadata_Plate, well.Metadata_Well, field, image)
            rows.append(
                {
                    **well._asdict(),
                    "folder": str(folder / well.Metadata_Plate),
                    "well": well.Metadata_Well,
                    "field": field,
                }
            )
    return pd.DataFrame(rows).drop(columns="Index")


def featured(design: pd.DataFrame) -> pd.DataFrame:
    """The design wells with a distinct value of each feature per well."""
    return design.assign(**{feature: np.arange(len(design)) * (i + 1.5) for i, feature in enumerate(FEATURES)})


@pytest.fixture(scope="module")
def mirror(design, source, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("mirror")
    folders = gallery_mirror.write_plate_images(source, root, gallery.GalleryConfig())
    gallery_mirror.write_published_profiles(featured(design), FEATURES, root, gallery.GalleryConfig())
    return root, folders


@pytest.fixture
def served(mirror, monkeypatch):
    """The mirror in an in-process moto bucket; the client reads it as the anonymous Gallery client would."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="cellpainting-gallery")
        client.put_bucket_policy(
            Bucket="cellpainting-gallery", Policy=gallery_mirror.public_read_policy("cellpainting-gallery")
        )
        count = gallery_mirror.upload(mirror[0], client, "cellpainting-gallery")
        yield client, count


def test_every_site_has_eight_images_and_every_plate_an_index_file(mirror, source):
    _, folders = mirror
    for plate, folder in folders.items():
        names = sorted(path.name for path in folder.iterdir())
        assert gallery_mirror.INDEX_FILE in names
        images = [name for name in names if name.endswith(".tiff")]
        assert len(images) == 8 * (source["Metadata_Plate"] == plate).sum()
        assert {int(re.search(r"-ch(\d)", name).group(1)) for name in images} == set(range(1, 9))


def test_plate_folders_are_the_barcode_and_an_acquisition_time(mirror):
    _, folders = mirror
    for plate, folder in folders.items():
        assert folder.name == gallery.IMAGES_FOLDER
        assert re.fullmatch(rf"{plate}__2020-11-\d\dT\d\d_\d\d_\d\d-Measurement1", folder.parent.name)


def test_download_reads_the_mirror_back_as_written_without_brightfield(served, source, tmp_path):
    table = gallery.download_screen(PLATES, tmp_path, [1, 2], wells=sorted(set(source["well"])),
                                    metadata_folder=METADATA, progress=False)  # fmt: skip
    assert len(table) == len(source)
    images, _ = embed.read_fields(table, progress=False)
    originals = source.set_index(["Metadata_Plate", "well", "field"])
    for image, key in zip(images, table[["Metadata_Plate", "well", "field"]].itertuples(index=False)):
        original = originals.loc[tuple(key)]
        np.testing.assert_array_equal(image, read_field(original["folder"], key.well, key.field))
    downloaded = [path.name for path in tmp_path.rglob("*.tiff")]
    assert len(downloaded) == 5 * len(source)
    assert not [name for name in downloaded if re.search(r"-ch[678]", name)]


def test_published_profiles_read_back_with_the_design_and_the_features(served, design, tmp_path):
    gallery.download_profiles(PLATES, tmp_path, gallery.GalleryConfig())
    loaded = published.load_published_profiles(tmp_path, PLATES, METADATA)
    assert list(loaded.columns[-len(FEATURES) :]) == FEATURES
    merged = loaded.merge(featured(design), on=["Metadata_Plate", "Metadata_Well"], suffixes=("", "_written"))
    assert len(merged) == len(loaded) == len(design)
    for feature in FEATURES:
        np.testing.assert_array_equal(merged[feature], merged[f"{feature}_written"])
    assert (merged["Metadata_broad_sample"] == merged["Metadata_broad_sample_written"]).all()


def test_published_metadata_leaves_out_the_solvent_sample(design):
    metadata = gallery_mirror.published_metadata(design)
    dmso = design["Metadata_broad_sample"] == "DMSO"
    assert metadata.loc[dmso, "Metadata_broad_sample"].isna().all()
    assert metadata.loc[~dmso, "Metadata_broad_sample"].tolist() == design.loc[~dmso, "Metadata_broad_sample"].tolist()
