"""Tests for cellstudy.training.crops: cell-content filter, crop sampling, statistics, normalisation, augmentation."""

import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from cellstudy.data.decodedstore import convert_fields
from cellstudy.data.fieldstore import FieldStore
from cellstudy.data.images import DAOY_CHANNELS, list_fields, write_field
from cellstudy.training.crops import (
    ChannelStats,
    CropConfig,
    CropDataset,
    augment,
    cell_fraction,
    cell_threshold,
    compute_channel_stats,
    crop_fractions,
    crop_loader,
    load_fields,
    normalise,
    sample_position,
)
from cellstudy.training.train import StepBatchSampler

IDENTITY = ChannelStats(mean=[0.0] * 5, std=[1.0] * 5, scale=[1.0] * 5, transform="raw")
"""Statistics under which normalise() returns raw intensities unchanged."""
PLAIN = dict(flips=False, intensity_jitter=0.0, gamma_jitter=0.0, transform="raw")
"""Crop settings without augmentation."""


def blob_field(size: int = 128, blobs_left_of: int = 56, seed: int = 0) -> np.ndarray:
    """(5, size, size) uint16 field; DNA (channel 0) has bright nuclei only left of ``blobs_left_of``."""
    rng = np.random.default_rng(seed)
    field = rng.poisson(100, size=(5, size, size)).astype(np.float64)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12):
        cy, cx = rng.integers(8, size - 8), rng.integers(6, blobs_left_of - 6)
        field[0] += 3000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
    return field.astype(np.uint16)


def coordinate_field(size: int = 128) -> np.ndarray:
    """Field whose channels 1 and 2 hold each pixel's row + 1 and column + 1; DNA bright everywhere."""
    yy, xx = np.mgrid[:size, :size]
    dna = np.where((yy + xx) % 2 == 0, 1000, 10)
    return np.stack([dna, yy + 1, xx + 1, np.ones_like(yy), np.ones_like(yy)]).astype(np.uint16)


def test_cell_threshold_is_fraction_of_otsu():
    dna = blob_field()[0]
    assert cell_threshold(dna, 0.7) == pytest.approx(0.7 * threshold_otsu(dna))
    assert cell_threshold(np.full((8, 8), 5), 0.7) == 5.0  # constant field: nothing counts as cell


def test_sampled_crops_contain_cells_and_empty_regions_fail_the_rule():
    dna = blob_field()[0]
    threshold = 0.7 * threshold_otsu(dna)
    rng = np.random.default_rng(1)
    for _ in range(30):
        y, x = sample_position(rng, dna, threshold, (0, 0, 128, 128), 24, 0.01, max_tries=50)
        assert np.mean(dna[y : y + 24, x : x + 24] > threshold) >= 0.01
    assert cell_fraction(dna[:, 72:], threshold) == 0.0
    assert sample_position(rng, dna, threshold, (0, 72, 128, 128), 24, 0.01, max_tries=5) == (0, 72)  # none qualifies


def test_exhaustive_fallback_finds_the_only_crop_with_cells():
    dna = np.zeros((64, 64))
    dna[40, 50] = 1.0  # a single cell pixel: 1 of 100 pixels of a 10 px crop
    rng = np.random.default_rng(0)
    fractions = crop_fractions(dna, 0.5, (0, 0, 64, 64), 10)
    assert fractions.shape == (55, 55) and fractions[35, 45] == 0.01 and fractions[30, 40] == 0.0
    for _ in range(10):
        y, x = sample_position(rng, dna, 0.5, (0, 0, 64, 64), 10, 0.01, max_tries=0)
        assert y <= 40 < y + 10 and x <= 50 < x + 10


def test_dataset_views_pass_the_filter():
    field = blob_field()
    config = CropConfig(global_size=32, region_size=48, n_global=2, n_local=2, local_size=16, **PLAIN)
    dataset = CropDataset([field], config, IDENTITY, seed=0)
    threshold = cell_threshold(field[0])
    for index in range(20):
        for view in dataset[index]["views"]:
            assert np.mean(view[0].numpy() > threshold) >= 0.01


def test_views_are_native_resolution_crops_from_one_region():
    config = CropConfig(global_size=32, region_size=48, n_global=2, n_local=3, local_size=16, **PLAIN)
    dataset = CropDataset([coordinate_field()], config, IDENTITY, seed=3)
    for index in range(10):
        item = dataset[index]
        assert [v.shape[-1] for v in item["views"]] == [32, 32, 16, 16, 16]
        rows = np.concatenate([v[1].numpy().ravel() for v in item["views"]])
        cols = np.concatenate([v[2].numpy().ravel() for v in item["views"]])
        assert rows.max() - rows.min() < 48 and cols.max() - cols.min() < 48
        first = item["views"][0]
        assert np.array_equal(np.diff(first[1, :, 0].numpy()), np.ones(31))  # consecutive rows: no resizing


def test_sample_depends_only_on_seed_and_index():
    config = CropConfig(global_size=32, region_size=32)
    stats = compute_channel_stats([blob_field()])
    first, again = (
        CropDataset([blob_field()], config, stats, seed=4),
        CropDataset([blob_field()], config, stats, seed=4),
    )
    assert np.array_equal(first[7]["views"][0].numpy(), again[7]["views"][0].numpy())
    assert first[7]["seed"] == again[7]["seed"]
    assert not np.array_equal(first[7]["views"][0].numpy(), first[8]["views"][0].numpy())


@pytest.mark.parametrize("transform, forward", [("log1p", np.log1p), ("raw", lambda x: x)])
def test_channel_stats_match_numpy_when_every_pixel_is_sampled(transform, forward):
    fields = [blob_field(64, seed=0), blob_field(48, seed=1)[:, :, :40]]
    stats = compute_channel_stats(fields, transform, pixels_per_field=64 * 64)
    pixels = np.concatenate([f.reshape(5, -1) for f in fields], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, forward(pixels).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, forward(pixels).std(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.scale, np.percentile(pixels, 99.9, axis=1))
    assert ChannelStats.from_dict(stats.to_dict()) == stats


def test_channel_stats_from_a_seeded_subsample_approach_the_full_statistics():
    fields = [blob_field(128, seed=s) for s in range(3)]
    full = compute_channel_stats(fields, pixels_per_field=128 * 128)
    sampled = compute_channel_stats(fields, pixels_per_field=4096, seed=5)
    assert sampled == compute_channel_stats(fields, pixels_per_field=4096, seed=5)
    assert sampled != compute_channel_stats(fields, pixels_per_field=4096, seed=6)
    np.testing.assert_allclose(sampled.mean, full.mean, rtol=0.01)
    np.testing.assert_allclose(sampled.std, full.std, rtol=0.1)


def test_channel_stats_percentile_uses_an_even_share_of_percentile_pixels():
    fields = [np.full((5, 8, 8), value, dtype=np.uint16) for value in (10, 20)]
    assert compute_channel_stats(fields, "raw").scale == [20.0] * 5
    np.testing.assert_allclose(
        compute_channel_stats(fields, "raw", percentile_pixels=2).scale, np.percentile([10.0, 20.0], 99.9)
    )


class LazyFields(Sequence):
    """``count`` random (5, 256, 256) uint16 fields, made when indexed (nothing kept)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if index >= self.count:
            raise IndexError(index)
        return np.random.default_rng(index).integers(100, 5000, (5, 256, 256), dtype=np.uint16)


def test_channel_stats_memory_does_not_grow_with_the_number_of_fields():
    fields = LazyFields(150)
    tracemalloc.start()
    try:
        compute_channel_stats(fields, pixels_per_field=4096, percentile_pixels=15_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_samples = len(fields) * 5 * 4096 * 8  # float64 samples of every field at once: 24.6 MB
    assert peak < all_samples / 8


def test_channel_stats_of_a_large_screen_read_a_seeded_sample_of_fields():
    class Counting(LazyFields):
        def __getitem__(self, index: int) -> np.ndarray:
            read.append(index)
            return super().__getitem__(index)[:, :16, :16]

    read = []
    fields = Counting(40)
    stats = compute_channel_stats(fields, "raw", pixels_per_field=256, max_fields=7, seed=2)
    assert len(read) == len(set(read)) == 7
    pixels = np.concatenate([fields[i].reshape(5, -1) for i in sorted(read)], axis=1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=1), rtol=1e-12)  # every pixel of the 7 fields
    np.testing.assert_allclose(stats.std, pixels.std(axis=1), rtol=1e-12)
    read.clear()
    assert compute_channel_stats(fields, "raw", pixels_per_field=256, max_fields=7, seed=2) == stats
    assert compute_channel_stats(fields, "raw", pixels_per_field=256, max_fields=40) == compute_channel_stats(
        fields, "raw", pixels_per_field=256, max_fields=None
    )


def test_constant_channel_is_rejected():
    field = blob_field(32)
    field[3] = 7
    with pytest.raises(ValueError, match=r"channel\(s\) \[3\]"):
        compute_channel_stats([field])
    with pytest.raises(ValueError, match="no fields"):
        compute_channel_stats([])


def test_normalise_dataset_and_crop_modes():
    crop = blob_field(32)
    stats = ChannelStats([1.0, 2.0, 3.0, 4.0, 5.0], [0.5] * 5, [1.0] * 5, "log1p")
    expected = (np.log1p(crop.astype(np.float64)) - np.arange(1, 6)[:, None, None]) / 0.5
    np.testing.assert_allclose(normalise(crop, stats), expected, rtol=1e-5, atol=1e-5)
    per_crop = normalise(crop, stats, "crop")
    np.testing.assert_allclose(per_crop.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_crop.std(axis=(1, 2)), 1.0, atol=1e-4)


def test_flips_give_one_of_eight_dihedral_transforms():
    crop = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    dihedral = [np.rot90(c, k, axes=(1, 2)) for k in range(4) for c in (crop, crop[:, :, ::-1])]
    config = CropConfig(flips=True, intensity_jitter=0.0, gamma_jitter=0.0)
    seen = set()
    for seed in range(40):
        out = augment(crop, np.random.default_rng(seed), config, IDENTITY)
        seen.add(next(i for i, d in enumerate(dihedral) if np.array_equal(out, d)))
    assert len(seen) == 8


def test_intensity_jitter_scales_each_channel():
    crop = np.random.default_rng(0).integers(1, 1000, (5, 8, 8)).astype(np.float32)
    out = augment(
        crop, np.random.default_rng(1), CropConfig(flips=False, intensity_jitter=0.2, gamma_jitter=0.0), IDENTITY
    )
    ratio = (out / crop).reshape(5, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(64, axis=1), rtol=1e-5)
    assert np.all((ratio >= 0.8) & (ratio <= 1.2)) and len(np.unique(ratio[:, 0].round(6))) == 5


def test_gamma_jitter_is_a_power_law_around_the_channel_scale():
    crop = np.random.default_rng(0).integers(1, 900, (5, 8, 8)).astype(np.float32)
    stats = ChannelStats([0.0] * 5, [1.0] * 5, [1000.0] * 5, "raw")
    out = augment(
        crop, np.random.default_rng(2), CropConfig(flips=False, intensity_jitter=0.0, gamma_jitter=0.2), stats
    )
    gamma = (np.log(out / 1000.0) / np.log(crop / 1000.0)).reshape(5, -1)
    np.testing.assert_allclose(gamma, gamma[:, :1].repeat(64, axis=1), rtol=1e-3)
    assert np.all((gamma > 1 / 1.2 - 1e-4) & (gamma < 1.2 + 1e-4))


def test_config_and_dataset_validation():
    with pytest.raises(ValueError, match="region_size >= global_size"):
        CropConfig(global_size=64, region_size=32)
    with pytest.raises(ValueError, match="transform"):
        CropConfig(transform="sqrt")
    with pytest.raises(ValueError, match="small well: expected a \\(C, H, W\\) field at least 64 px"):
        CropDataset([blob_field(32)], CropConfig(), IDENTITY, names=["small well"])


def test_load_fields_reads_nested_folders(tmp_path):
    first, second = blob_field(32, seed=1), blob_field(32, seed=2)
    write_field(tmp_path / "DMSO", "D14", 5, first)
    write_field(tmp_path / "FK-866", "L09", 3, second)
    fields, names = load_fields(tmp_path)
    assert [name.split("/")[-3:] for name in names] == [["DMSO", "D14", "f05"], ["FK-866", "L09", "f03"]]
    assert np.array_equal(fields[0], first) and np.array_equal(fields[1], second)
    with pytest.raises(FileNotFoundError, match="no Phenix-named field images"):
        load_fields(tmp_path / "DMSO" / "missing")


def test_load_fields_reads_the_given_layout(tmp_path):
    image = blob_field(32, seed=3)
    write_field(tmp_path / "DAOY", "B02", 1, image, DAOY_CHANNELS)
    fields, names = load_fields(tmp_path, "daoy")
    assert [field.tobytes() for field in fields] == [image.tobytes()] and names[0].endswith("DAOY/B02/f01")
    with pytest.raises(ValueError, match=r"unknown channel layout 'cp9'; known layouts: \['cpjump1', 'daoy'\]"):
        load_fields(tmp_path, "cp9")


def test_loader_batches_are_the_same_whatever_the_number_of_workers(tmp_path):
    fields = [blob_field(seed=seed) for seed in range(3)]
    for index, field in enumerate(fields):
        write_field(tmp_path / "plate", "A01", index + 1, field)
    table = convert_fields(list_fields(tmp_path / "plate"), tmp_path / "decoded", n_workers=1, progress=False)
    config = CropConfig(global_size=32, region_size=48, n_global=2, n_local=2, local_size=16)
    dataset = CropDataset(FieldStore(table, progress=False), config, compute_channel_stats(fields), seed=5)
    sampler = StepBatchSampler(0, 4, batch_size=6)
    serial, parallel = (list(crop_loader(dataset, sampler, num_workers)) for num_workers in (0, 2))
    assert len(serial) == len(parallel) == 4
    for one, other in zip(serial, parallel):
        assert one["seed"].tolist() == other["seed"].tolist()
        assert [view.numpy().tobytes() for view in one["views"]] == [view.numpy().tobytes() for view in other["views"]]
