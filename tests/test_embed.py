"""Tests for cellstudy.profiling.embed: tiling, cell filter, batching, per-well means, baselines, determinism."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from cellstudy.columns import N_TILES
from cellstudy.data.images import CHANNELS, DAOY_CHANNELS, LAYOUT, list_fields, read_field, write_field
from cellstudy.models.vit import EncoderConfig
from cellstudy.profiling import embed
from cellstudy.training.crops import CropConfig, cell_threshold, normalise
from cellstudy.training.train import (
    apply_overrides,
    build_model,
    default_config,
    load_encoder,
    seed_everything,
    train,
)

SIZE = 32
"""Tile side of the tests (the tiny encoder's crop size)."""
DNA = CHANNELS.index("DNA")


def planted_field(cell_tiles: list[tuple[int, int]], shape: tuple[int, int] = (96, 128), seed: int = 0) -> np.ndarray:
    """uint16 field with dim noise everywhere and a bright Gaussian 'nucleus' in the centre of the given tiles."""
    rng = np.random.default_rng(seed)
    field = rng.poisson(100, size=(len(CHANNELS), *shape)).astype(np.float64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for row, col in cell_tiles:
        cy, cx = row * SIZE + SIZE // 2, col * SIZE + SIZE // 2
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
        field += blob * rng.uniform(2000, 5000, size=(len(CHANNELS), 1, 1))
    return field.astype(np.uint16)


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    """encoder.pt of a one-block ViT trained for one MAE step on synthetic fields."""
    out = tmp_path_factory.mktemp("mae")
    config = apply_overrides(
        default_config("mae"),
        {
            "encoder": {"depth": 1, "img_size": SIZE},
            "crops": {"global_size": SIZE, "region_size": SIZE},
            "train": {"steps": 1, "batch_size": 2, "warmup_steps": 0, "device": "cpu"},
            "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
        },
    )
    fields = [planted_field([(0, 0), (1, 2), (2, 3)], seed=seed) for seed in range(2)]
    train(config, fields, out, progress=False)
    return out / "encoder.pt"


@pytest.fixture(scope="module")
def field_table(tmp_path_factory):
    """Two plates, three wells, one or two fields per well, written as Phenix TIFFs."""
    root = tmp_path_factory.mktemp("screen")
    layout = [
        ("P1", "A01", 1, [(0, 0), (1, 1)]),
        ("P1", "A01", 2, [(2, 3)]),
        ("P1", "B02", 1, [(0, 1), (0, 2), (1, 3), (2, 0)]),
        ("P2", "A01", 1, [(1, 2)]),
    ]
    rows = []
    for index, (plate, well, field, cells) in enumerate(layout):
        write_field(root / plate, well, field, planted_field(cells, seed=index))
        rows.append(
            {"Metadata_Plate": plate, "Metadata_Well": well, "folder": str(root / plate), "well": well, "field": field}
        )
    return pd.DataFrame(rows)


def test_tile_grid_covers_a_divisible_field_exactly_once():
    corners = embed.tile_grid(96, 64, SIZE)
    assert len(corners) == (96 // SIZE) * (64 // SIZE)
    coverage = np.zeros((96, 64), dtype=int)
    for y, x in corners:
        coverage[y : y + SIZE, x : x + SIZE] += 1
    assert (coverage == 1).all()


def test_tile_grid_of_an_indivisible_field_is_centred_and_non_overlapping():
    height, width = 100, 75
    corners = embed.tile_grid(height, width, SIZE)
    assert len(corners) == (height // SIZE) * (width // SIZE)
    coverage = np.zeros((height, width), dtype=int)
    for y, x in corners:
        coverage[y : y + SIZE, x : x + SIZE] += 1
    assert coverage.max() == 1 and coverage.sum() == len(corners) * SIZE**2
    rows, cols = np.flatnonzero(coverage.any(axis=1)), np.flatnonzero(coverage.any(axis=0))
    assert abs(rows[0] - (height - 1 - rows[-1])) <= 1 and abs(cols[0] - (width - 1 - cols[-1])) <= 1
    with pytest.raises(ValueError, match="no 32 px tile"):
        embed.tile_grid(20, 75, SIZE)


def test_cut_tiles_are_the_slices_at_their_corners():
    image = np.random.default_rng(0).integers(0, 1000, size=(5, 100, 75)).astype(np.uint16)
    tiles, corners = embed.cut_tiles(image, SIZE)
    for tile, (y, x) in zip(tiles, corners):
        np.testing.assert_array_equal(tile, image[:, y : y + SIZE, x : x + SIZE])


def test_cell_filter_keeps_exactly_the_planted_tiles():
    planted = [(0, 1), (1, 3), (2, 0)]
    _, corners = embed.cell_tiles(planted_field(planted), SIZE, CropConfig())
    assert sorted(map(tuple, corners // SIZE)) == sorted(planted)


def test_field_without_passing_tiles_keeps_its_most_cellular_tile():
    field = planted_field([(1, 2)])
    field[DNA, 0:3, 0:3] = 4000  # a second, smaller bright spot in tile (0, 0)
    strict = CropConfig(min_cell_fraction=0.5)
    threshold = cell_threshold(field[DNA])
    assert (field[DNA, 32:64, 64:96] > threshold).mean() < 0.5  # so no tile passes
    _, corners = embed.cell_tiles(field, SIZE, strict)
    assert corners.tolist() == [[32, 64]]


def test_featurise_in_batches_runs_fixed_batches_across_chunks():
    rows = np.arange(10.0)[:, None]
    chunks = [rows[:3], rows[3:3], rows[3:8], rows[8:]]
    sizes = []

    def double(batch):
        sizes.append(len(batch))
        return 2 * batch

    out = np.concatenate(list(embed.featurise_in_batches(chunks, double, 4)))
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(out, 2 * rows)


def test_pixel_statistics_match_numpy_per_tile_and_channel():
    tiles = np.random.default_rng(0).normal(size=(3, 5, 8, 8)).astype(np.float32)
    featuriser = embed.pixel_statistics_featuriser(percentiles=(10.0, 50.0))
    values = featuriser.features(tiles)
    assert featuriser.columns[:4] == ["pix_DNA_mean", "pix_DNA_std", "pix_DNA_p10", "pix_DNA_p50"]
    for t in range(3):
        for c in range(5):
            pixels = tiles[t, c].astype(np.float64).ravel()
            expected = [pixels.mean(), pixels.std(), np.percentile(pixels, 10), np.percentile(pixels, 50)]
            np.testing.assert_allclose(values[t, 4 * c : 4 * c + 4], expected, rtol=1e-12)


def test_tile_embeddings_are_the_encoder_outputs_on_normalised_slices(encoder_path, field_table):
    model = load_encoder(encoder_path)
    tiles = embed.embed(model, field_table, pooling="cls", per_tile=True, progress=False)
    first = field_table.iloc[0]
    image = planted_field([(0, 0), (1, 1)], seed=0)
    rows = tiles[(tiles["Metadata_Plate"] == "P1") & (tiles["Metadata_Well"] == "A01") & (tiles["Metadata_Field"] == 1)]
    assert sorted(zip(rows["Metadata_TileY"] // SIZE, rows["Metadata_TileX"] // SIZE)) == [(0, 0), (1, 1)]
    for _, row in rows.iterrows():
        y, x = row["Metadata_TileY"], row["Metadata_TileX"]
        crop = normalise(image[None, :, y : y + SIZE, x : x + SIZE], model.stats, model.crops.standardise)
        with torch.no_grad():
            tokens = model.encoder.forward_features(torch.from_numpy(crop))
        np.testing.assert_allclose(row.filter(like="emb_").to_numpy(float), tokens[0, 0].numpy(), atol=1e-5)
    assert first["folder"].endswith("P1")


def test_well_profile_is_the_numpy_mean_of_its_tiles(encoder_path, field_table):
    model = load_encoder(encoder_path)
    tiles = embed.embed(model, field_table, per_tile=True, progress=False)
    wells = embed.embed(model, field_table, progress=False)
    columns = [c for c in wells.columns if c.startswith("emb_")]
    assert len(columns) == model.encoder.embed_dim and columns[0] == "emb_0000"
    assert list(zip(wells["Metadata_Plate"], wells["Metadata_Well"])) == [("P1", "A01"), ("P1", "B02"), ("P2", "A01")]
    for _, well in wells.iterrows():
        key = ["Metadata_Plate", "Metadata_Well"]
        mine = tiles[(tiles[key] == well[key]).all(axis=1)]
        assert well[N_TILES] == len(mine)
        np.testing.assert_allclose(
            well[columns].to_numpy(float), np.mean(mine[columns].to_numpy(), axis=0), rtol=1e-5, atol=1e-7
        )
    assert wells[N_TILES].tolist() == [3, 4, 1]


def test_batch_size_does_not_change_embeddings_and_runs_repeat_exactly(encoder_path, field_table):
    model = load_encoder(encoder_path)
    one = embed.embed(model, field_table, batch_size=1, per_tile=True, progress=False)
    seven = embed.embed(model, field_table, batch_size=7, per_tile=True, progress=False)
    again = embed.embed(model, field_table, batch_size=7, per_tile=True, progress=False)
    pd.testing.assert_frame_equal(seven, again)
    pd.testing.assert_frame_equal(one, seven, check_exact=False, atol=1e-5, rtol=0)


def test_pooling_defaults_follow_the_method(encoder_path, field_table):
    model = load_encoder(encoder_path)
    assert model.method == "mae"
    pd.testing.assert_frame_equal(
        embed.embed(model, field_table, progress=False), embed.embed(model, field_table, pooling="mean", progress=False)
    )
    dino = model._replace(method="dino")
    pd.testing.assert_frame_equal(
        embed.embed(dino, field_table, progress=False), embed.embed(model, field_table, pooling="cls", progress=False)
    )
    with pytest.raises(ValueError, match="pooling"):
        embed.embed(model, field_table, pooling="max")


def test_tile_subsampling_is_a_seeded_subset(encoder_path, field_table):
    model = load_encoder(encoder_path)
    every = embed.embed(model, field_table, per_tile=True, progress=False)
    capped = embed.embed(model, field_table, per_tile=True, max_tiles_per_field=2, seed=3, progress=False)
    again = embed.embed(model, field_table, per_tile=True, max_tiles_per_field=2, seed=3, batch_size=1, progress=False)
    key = ["Metadata_Plate", "Metadata_Well", "Metadata_Field", "Metadata_TileY", "Metadata_TileX"]
    assert capped.groupby(key[:3]).size().max() == 2
    assert set(map(tuple, capped[key].to_numpy())) <= set(map(tuple, every[key].to_numpy()))
    pd.testing.assert_frame_equal(capped[key], again[key])


def test_random_init_encoder_is_seeded_and_leaves_the_global_state(encoder_path):
    pretrained = load_encoder(encoder_path)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = embed.random_init_encoder(encoder_path, seed=0)
    assert torch.equal(torch.rand(3), expected_draw)
    second, other = embed.random_init_encoder(encoder_path, seed=0), embed.random_init_encoder(encoder_path, seed=1)
    weights = [dict(model.encoder.state_dict()) for model in (first, second, other, pretrained)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not torch.equal(weights[0]["blocks.0.attn.qkv.weight"], weights[2]["blocks.0.attn.qkv.weight"])
    assert not torch.equal(weights[0]["blocks.0.attn.qkv.weight"], weights[3]["blocks.0.attn.qkv.weight"])
    assert first.stats == pretrained.stats and first.crops == pretrained.crops and first.step == 0


def test_random_init_with_the_training_seed_is_the_pretrained_encoders_starting_point(encoder_path):
    config = EncoderConfig(**torch.load(encoder_path, weights_only=True)["encoder_config"])
    seed_everything(0)  # what train() does before building the model, with the default seed 0
    start = build_model(apply_overrides(default_config("mae"), {"encoder": dataclasses.asdict(config)})).encoder
    random = embed.random_init_encoder(encoder_path, seed=0).encoder
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), random.state_dict().values()))


def test_pixel_profiles_are_per_well_means_of_tile_statistics(encoder_path, field_table):
    model = load_encoder(encoder_path)
    wells = embed.pixel_profiles(field_table, model.stats, model.crops, percentiles=(50.0,), progress=False)
    tiles = embed.pixel_profiles(
        field_table, model.stats, model.crops, percentiles=(50.0,), per_tile=True, progress=False
    )
    assert [c for c in wells.columns if c.startswith("pix_")][:3] == ["pix_DNA_mean", "pix_DNA_std", "pix_DNA_p50"]
    np.testing.assert_allclose(
        wells.iloc[2].filter(like="pix_").to_numpy(float),
        tiles[tiles["Metadata_Plate"] == "P2"].filter(like="pix_").to_numpy().mean(axis=0),
    )


def test_bad_tables_are_named(encoder_path, field_table):
    model = load_encoder(encoder_path)
    with pytest.raises(KeyError, match="field"):
        embed.embed(model, field_table.drop(columns="field"), progress=False)
    with pytest.raises(ValueError, match="well A01 field 1 in .*P1"):
        embed.embed(model, field_table, tile_size=256, progress=False)


def test_combined_featurisers_give_the_same_tables_as_separate_runs(encoder_path, field_table):
    model = load_encoder(encoder_path)
    featurisers = {
        "enc": embed.encoder_featuriser(model.encoder, "cls"),
        "pix": embed.pixel_statistics_featuriser(percentiles=(50.0,)),
    }
    combined = embed.embed_fields(
        field_table, embed.combine_featurisers(featurisers), model.stats, model.crops, batch_size=5, progress=False
    )
    split = embed.split_features(combined, ["enc", "pix"])
    for name, featuriser in featurisers.items():
        alone = embed.embed_fields(field_table, featuriser, model.stats, model.crops, batch_size=5, progress=False)
        pd.testing.assert_frame_equal(split[name], alone)


def test_read_fields_reads_every_row_in_order(field_table):
    images, names = embed.read_fields(field_table.iloc[::-1], progress=False)
    assert len(images) == len(field_table) and images[0].shape == (5, 96, 128)
    np.testing.assert_array_equal(images[-1], planted_field([(0, 0), (1, 1)], seed=0))
    assert names[-1].endswith("P1/A01/f01")


def test_fields_are_read_and_embedded_in_each_rows_channel_layout(tmp_path, encoder_path, field_table):
    plate = field_table[field_table["Metadata_Plate"] == "P1"].reset_index(drop=True)
    written = [read_field(row.folder, row.well, row.field) for row in plate.itertuples()]
    for row, image in zip(plate.itertuples(), written):
        write_field(tmp_path, row.well, row.field, image, DAOY_CHANNELS)
    daoy = list_fields(tmp_path, "daoy")  # sorted by well and field: the plate's order
    images, _ = embed.read_fields(pd.concat([plate, daoy], ignore_index=True), progress=False)  # P1 rows: CPJUMP1
    assert [image.tobytes() for image in images] == [image.tobytes() for image in written * 2]
    model = load_encoder(encoder_path)
    tiles = [
        embed.pixel_profiles(table, model.stats, model.crops, per_tile=True, progress=False).filter(like="pix_")
        for table in (plate, daoy)
    ]
    pd.testing.assert_frame_equal(*tiles)
    with pytest.raises(ValueError, match=r"unknown channel layout 'cp9'; known layouts: \['cpjump1', 'daoy'\]"):
        embed.read_fields(daoy.assign(**{LAYOUT: "cp9"}), progress=False)
