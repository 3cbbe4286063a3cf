"""Tests for cellstudy.features.segmentation on planted synthetic nuclei and cells and on real CPJUMP1 fields."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellstudy.data import images
from cellstudy.data.sources import data_root
from cellstudy.features import segmentation

IMAGES = data_root() / "cpjump1" / "images"
needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason="CPJUMP1 sample images not available")

SIZE = 600
GRID = 75  # spacing of the planted grid (px): isolated nuclei never touch


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def planted_nuclei(seed: int = 0, background: float = 500.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A DNA image with nuclei of radius 12-18 px, one per grid cell; every fourth cell holds a touching pair.

    Returns the image (blurred, noisy, nucleus brightness varying four-fold) and the planted centres.
    """
    rng = np.random.default_rng(seed)
    dna = np.full((SIZE, SIZE), background)
    centres = []
    for index, (row, col) in enumerate(np.ndindex(SIZE // GRID, SIZE // GRID)):
        centre = np.array([row, col]) * GRID + GRID / 2 + rng.uniform(-5, 5, 2)
        radius = rng.uniform(12, 16)
        if index % 4 == 0:  # two nuclei overlapping by about 15% of their diameter
            offset = 0.85 * radius * np.array([np.cos(angle := rng.uniform(0, np.pi)), np.sin(angle)])
            members = [centre - offset, centre + offset]
        else:
            members = [centre]
        for member in members:
            dna[disk(dna.shape, member, radius)] = rng.uniform(2000, 8000)
            centres.append(tuple(member))
    dna = ndi.gaussian_filter(dna, 1.5) + rng.normal(0, 40, dna.shape)
    return np.clip(dna, 0, None), centres


def planted_cells(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (5, H, W) field of isolated cells (radius 28) around nuclei (radius 12), and the cell masks' labels."""
    rng = np.random.default_rng(seed)
    shape = (SIZE // 2, SIZE // 2)
    image = np.full((5, *shape), 400.0)
    truth = np.zeros(shape, int)
    for label, (row, col) in enumerate(np.ndindex(shape[0] // GRID, shape[1] // GRID), start=1):
        centre = np.array([row, col]) * GRID + GRID / 2 + rng.uniform(-3, 3, 2)
        cell = disk(shape, centre, 28)
        truth[cell] = label
        for name in ("AGP", "RNA", "ER"):
            image[images.CHANNELS.index(name)][cell] = rng.uniform(1500, 3000)
        image[0][disk(shape, centre, 12)] = rng.uniform(3000, 6000)
    image = ndi.gaussian_filter(image, (0, 1.0, 1.0)) + rng.normal(0, 30, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), truth


def centres_found_once(labels: np.ndarray, centres: list[tuple[float, float]]) -> float:
    """Share of planted centres that fall in an object holding no other planted centre."""
    hits = [labels[int(round(y)), int(round(x))] for y, x in centres]
    counts = {label: hits.count(label) for label in hits}
    return np.mean([label > 0 and counts[label] == 1 for label in hits])


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_nuclei_are_counted(seed):
    dna, centres = planted_nuclei(seed)
    labels = segmentation.segment_nuclei(dna)
    assert abs(labels.max() - len(centres)) <= 0.05 * len(centres)
    assert centres_found_once(labels, centres) >= 0.95


def test_zero_background_images_are_counted():
    dna, centres = planted_nuclei(seed=2, background=0.0)
    assert abs(segmentation.count_nuclei(dna) - len(centres)) <= 0.05 * len(centres)


@pytest.mark.parametrize("kind", ["constant", "gaussian noise", "poisson noise"])
def test_field_without_nuclei_gives_none(kind):
    rng = np.random.default_rng(5)
    dna = {
        "constant": np.full((300, 300), 500.0),
        "gaussian noise": 500 + rng.normal(0, 40, (300, 300)),
        "poisson noise": rng.poisson(500, (300, 300)).astype(float),
    }[kind]
    assert segmentation.count_nuclei(dna) == 0


def test_labels_are_sequential_and_count_matches():
    dna, _ = planted_nuclei(seed=3)
    labels = segmentation.segment_nuclei(dna)
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert segmentation.count_nuclei(dna) == labels.max()


def test_elongated_nucleus_is_not_split():
    yy, xx = np.mgrid[:200, :200]
    ellipse = ((yy - 100) / 14.0) ** 2 + ((xx - 100) / 60.0) ** 2 <= 1
    rng = np.random.default_rng(4)
    dna = ndi.gaussian_filter(np.where(ellipse, 5000.0, 500.0), 1.5) + rng.normal(0, 40, ellipse.shape)
    labels = segmentation.segment_nuclei(dna)
    assert labels.max() == 1
    assert (labels > 0).sum() == pytest.approx(ellipse.sum(), rel=0.25)  # log-Otsu cuts low on the blurred edge


def test_debris_below_min_area_is_dropped():
    dna = np.full((120, 120), 500.0)
    dna[disk(dna.shape, (40, 40), 15)] = 5000.0
    dna[disk(dna.shape, (90, 90), 3)] = 5000.0  # 29 px: debris
    labels = segmentation.segment_nuclei(dna, min_area=80)
    assert labels.max() == 1 and labels[40, 40] == 1 and labels[90, 90] == 0


def test_touching_pair_is_split_along_the_neck():
    dna = np.full((100, 140), 500.0)
    dna[disk(dna.shape, (50, 50), 16) | disk(dna.shape, (50, 78), 16)] = 5000.0
    labels = segmentation.segment_nuclei(dna)
    assert labels.max() == 2
    assert labels[50, 50] != labels[50, 78]
    boundary = np.flatnonzero(labels[50, 40:90] != labels[50, 50])[0] + 40
    assert abs(boundary - 64) <= 2  # the neck is midway between the centres


def test_cells_contain_their_nucleus_and_share_its_label():
    image, truth = planted_cells()
    nuclei = segmentation.segment_nuclei(image[0])
    cells = segmentation.segment_cells(image, nuclei)
    assert nuclei.max() == truth.max()
    np.testing.assert_array_equal(cells[nuclei > 0], nuclei[nuclei > 0])
    assert set(np.unique(cells)) == set(np.unique(nuclei))
    for label in range(1, nuclei.max() + 1):
        planted = truth == truth[nuclei == label][0]
        found = cells == label
        assert (planted & found).sum() / (planted | found).sum() > 0.85  # intersection over union


def test_touching_cells_meet_in_the_dim_valley():
    # Left cell: bright perinuclear zone (radius 20) and a dim periphery out to the contact line at x = 80;
    # right cell: uniform. The boundary must follow the valley, not the edge of the bright zone (x = 70).
    shape = (100, 160)
    left, right = disk(shape, (50, 50), 34), disk(shape, (50, 110), 34)
    cytoplasm = np.full(shape, 400.0)
    cytoplasm[left | right] = 1500.0
    cytoplasm[disk(shape, (50, 50), 20)] = 3000.0
    cytoplasm[:, 79:82] = np.where((left | right)[:, 79:82], 1000.0, 400.0)
    image = np.stack([np.full(shape, 400.0)] + [cytoplasm] * 4)
    image[0][disk(shape, (50, 50), 12) | disk(shape, (50, 110), 12)] = 5000.0
    nuclei = segmentation.segment_nuclei(image[0])
    cells = segmentation.segment_cells(image, nuclei)
    boundary = np.flatnonzero(cells[50, 50:110] != cells[50, 50])[0] + 50
    assert abs(boundary - 80) <= 2


@needs_images
def test_real_dmso_field_count_is_plausible():
    # Counted by eye on the overlay: about 100 nuclei, none merged or split.
    dna = images.read_field(IMAGES / "DMSO", "D14")[0]
    assert 90 <= segmentation.count_nuclei(dna) <= 115


@needs_images
def test_real_amg900_nuclei_are_larger_than_dmso():
    # AMG900 (Aurora kinase inhibitor) blocks cytokinesis: polyploid nuclei, a known CPJUMP1 phenotype.
    def median_area(folder: str, well: str) -> float:
        labels = segmentation.segment_nuclei(images.read_field(IMAGES / folder, well)[0])
        return float(np.median(np.bincount(labels.ravel())[1:]))

    assert median_area("AMG900", "N09") > 1.5 * median_area("DMSO", "D14")


@needs_images
def test_real_cells_contain_their_nuclei():
    image = images.read_field(IMAGES / "DMSO", "D14")
    nuclei = segmentation.segment_nuclei(image[0])
    cells = segmentation.segment_cells(image, nuclei)
    np.testing.assert_array_equal(cells[nuclei > 0], nuclei[nuclei > 0])
    assert set(np.unique(cells)) == set(np.unique(nuclei))
    assert (cells > 0).sum() > 2 * (nuclei > 0).sum()
