"""Tests for cellstudy.applications.label_efficiency: plate split, exact subsample counts, probe against scikit-learn,
tiles against the embedding stage, fine-tuning, determinism of the whole experiment."""

import math
import tracemalloc
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from cellstudy.applications import label_efficiency as le
from cellstudy.columns import N_TILES
from cellstudy.data.decodedstore import convert_fields
from cellstudy.models.vit import EncoderConfig, build_encoder
from cellstudy.profiling import embed
from cellstudy.profiling.embed import read_fields
from cellstudy.simulation import simulate
from cellstudy.training.train import (
    apply_overrides,
    default_config,
    load_encoder,
    train,
)

TILE = 32
"""Crop and tile side of the tiny encoder."""
TINY = le.LabelEfficiencyConfig(
    fractions=(0.01, 0.5, 1.0),
    seeds=(0, 1),
    tiles_per_field=2,
    fine_tuning=le.FineTuning(steps=2, batch_size=4, warmup_steps=1),
)
"""A small experiment on the quick screen."""


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """The quick simulated screen (two replicate plates per modality, four genes)."""
    return simulate.simulate(simulate.QUICK_CONFIG, tmp_path_factory.mktemp("screen"), progress=False)


@pytest.fixture(scope="module")
def encoder_path(screen, tmp_path_factory):
    """encoder.pt of a one-block ViT after two MAE steps on six fields of the screen."""
    out = tmp_path_factory.mktemp("mae")
    config = apply_overrides(
        default_config("mae"),
        {
            "encoder": {"depth": 1, "img_size": TILE},
            "crops": {"global_size": TILE, "region_size": TILE},
            "train": {"steps": 2, "batch_size": 4, "warmup_steps": 0, "device": "cpu"},
            "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
        },
    )
    fields, names = read_fields(screen.field_table().head(6), progress=False)
    train(config, fields, out, names=names, progress=False)
    return out / "encoder.pt"


@pytest.fixture(scope="module")
def results(encoder_path, screen):
    return le.label_efficiency(encoder_path, screen.field_table(), TINY, progress=False)


def test_held_out_plates_are_whole_plates_one_per_condition(screen):
    wells = screen.wells
    chosen = set()
    for seed in range(6):
        test = le.held_out_plates(wells, seed)
        train_plates, test_plates = set(wells.loc[~test, "Metadata_Plate"]), set(wells.loc[test, "Metadata_Plate"])
        assert not train_plates & test_plates
        assert train_plates | test_plates == set(wells["Metadata_Plate"])
        per_condition = wells[test].groupby(list(le.CONDITION))["Metadata_Plate"].nunique()
        assert len(per_condition) == wells.groupby(list(le.CONDITION)).ngroups and (per_condition == 1).all()
        chosen.add(frozenset(test_plates))
    assert len(chosen) > 1  # the seed chooses


def test_a_condition_without_a_training_plate_is_named(screen):
    one_plate = screen.wells[screen.wells["Metadata_Plate"] != "SIM_BR00116997"]
    with pytest.raises(ValueError, match="SIM_BR00116996"):
        le.held_out_plates(one_plate, seed=0)
    with pytest.raises(ValueError, match="Metadata_Plate"):
        le.held_out_plates(one_plate.drop(columns="Metadata_Plate"), seed=0)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
def test_label_subsample_keeps_ceil_of_each_class_share(fraction):
    sizes = {"a": 10, "b": 3, "c": 1, "d": 40, "e": 7}
    labels = np.random.default_rng(0).permutation([label for label, n in sizes.items() for _ in range(n)])
    chosen = le.label_subsample(labels, fraction, seed=3)
    assert Counter(labels[chosen]) == {label: math.ceil(fraction * n) for label, n in sizes.items()}
    assert len(set(chosen)) == len(chosen)


def test_label_subsamples_are_nested_and_seeded():
    labels = np.repeat(np.arange(6), 20)
    small, large = le.label_subsample(labels, 0.1, seed=1), le.label_subsample(labels, 0.25, seed=1)
    assert set(small) < set(large)
    assert np.array_equal(small, le.label_subsample(labels, 0.1, seed=1))
    assert not np.array_equal(small, le.label_subsample(labels, 0.1, seed=2))
    with pytest.raises(ValueError, match="fraction"):
        le.label_subsample(labels, 0.0, seed=1)


def planted_embeddings(n_classes: int, per_class: int, separation: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=separation, size=(n_classes, 16))
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + rng.normal(size=(len(labels), 16)), labels


def test_linear_probe_separates_planted_classes_like_sklearn():
    train_x, train_y = planted_embeddings(8, 10, separation=6.0, seed=0)
    test_x, test_y = planted_embeddings(8, 10, separation=6.0, seed=0)
    test_x = test_x + np.random.default_rng(1).normal(scale=0.5, size=test_x.shape)
    predicted = le.linear_probe(train_x, train_y, test_x)
    scaler = StandardScaler().fit(train_x)
    reference = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    assert np.array_equal(predicted, reference.predict(scaler.transform(test_x)))
    assert (predicted == test_y).mean() >= 0.99


def test_linear_probe_on_shuffled_labels_is_near_chance():
    train_x, train_y = planted_embeddings(5, 60, separation=6.0, seed=0)
    test_x, test_y = planted_embeddings(5, 60, separation=6.0, seed=0)
    shuffled = np.random.default_rng(2).permutation(train_y)
    accuracy = (le.linear_probe(train_x, shuffled, test_x) == test_y).mean()
    assert abs(accuracy - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(test_y))


def test_classification_scores_are_sklearn_accuracy_and_macro_f1():
    truth, predicted = ["a", "a", "b", "b", "c"], ["a", "b", "b", "b", "a"]
    f1 = {"a": 2 * 0.5 * 0.5 / 1.0, "b": 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0), "c": 0.0}
    assert le.classification_scores(truth, predicted) == pytest.approx(
        {"accuracy": 3 / 5, "macro_f1": np.mean(list(f1.values()))}
    )


def test_tiles_and_well_embeddings_are_those_of_the_embedding_stage(encoder_path, screen):
    fields = screen.field_table().head(8)
    model = load_encoder(encoder_path)
    loaded = le.load_well_tiles(fields, model, tiles_per_field=3, seed=4, progress=False)
    mine = le.well_profiles(
        loaded.wells, le.tile_embeddings(model, loaded.tiles, batch_size=7, progress=False), loaded.well_index
    )
    expected = embed.embed(model, fields, max_tiles_per_field=3, seed=4, progress=False)
    assert loaded.tiles[:2].shape == (2, 5, TILE, TILE)
    assert np.array_equal(np.bincount(loaded.well_index), expected[N_TILES])
    columns = [c for c in expected.columns if c.startswith(embed.EMBEDDING_PREFIX)]
    np.testing.assert_allclose(mine[columns], expected[columns], rtol=1e-5, atol=1e-6)
    assert mine["Metadata_Well"].tolist() == expected["Metadata_Well"].tolist()


def test_tiles_are_held_as_places_and_normalised_a_batch_at_a_time(encoder_path, screen, tmp_path):
    """A batch equals the embedding stage's normalised tiles bit for bit, from the TIFFs and from the decoded store;
    the set itself holds a few integers per tile, not the float32 pixels."""
    fields = screen.field_table().head(8)
    model = load_encoder(encoder_path)
    expected = np.concatenate(
        [part.tiles for part in embed.field_tiles(fields, model.stats, model.crops, TILE, 3, 4, progress=False)]
    )
    decoded = convert_fields(fields, tmp_path / "decoded", 1, progress=False)
    rows = np.random.default_rng(0).permutation(len(expected))[:7]
    for table in (fields, decoded):
        tiles = le.load_well_tiles(table, model, tiles_per_field=3, seed=4, progress=False).tiles
        assert len(tiles) == len(expected)
        everything = tiles[np.arange(len(tiles))]
        assert everything.dtype == np.float32 and np.array_equal(everything, expected)
        assert np.array_equal(tiles[rows], expected[rows]) and np.array_equal(tiles[2:5], expected[2:5])
        assert tiles.raw(rows).dtype == np.uint16
        assert tiles.nbytes <= 3 * 8 * len(tiles) < expected[0].nbytes


def test_building_the_tiles_costs_far_less_memory_than_holding_them_as_float32(encoder_path, screen):
    """The peak of building the tile set of a screen stays under half of its float32 tiles (holding them, and
    concatenating the fields' parts, took twice their size)."""
    model = load_encoder(encoder_path)
    tracemalloc.start()
    try:
        tiles = le.load_well_tiles(screen.field_table(), model, progress=False).tiles
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    float32_bytes = len(tiles) * 5 * TILE * TILE * 4
    assert len(tiles) > 500 and peak < float32_bytes / 2


def test_well_logits_are_the_mean_of_each_wells_tile_logits():
    torch.manual_seed(0)
    classifier = le.TileClassifier(build_encoder(EncoderConfig(depth=1, img_size=TILE)), 3, "mean").eval()
    torch.nn.init.normal_(classifier.head.weight)
    tiles = np.random.default_rng(0).normal(size=(7, 5, TILE, TILE)).astype(np.float32)
    wells = np.array([2, 0, 2, 1, 0, 2, 1])
    with torch.no_grad():
        tile_logits = classifier(torch.from_numpy(tiles)).numpy()
    expected = np.stack([tile_logits[wells == w].mean(axis=0) for w in range(3)])
    np.testing.assert_allclose(le.well_logits(classifier, tiles, wells, 3, batch_size=3), expected, rtol=1e-5)


def test_random_flips_apply_one_of_the_eight_symmetries_to_each_tile():
    tiles = torch.arange(6 * 2 * 4 * 4, dtype=torch.float32).reshape(6, 2, 4, 4)
    flipped = le.random_flips(tiles, np.random.default_rng(0))
    for tile, out in zip(tiles, flipped):
        symmetries = [torch.rot90(tile, k, dims=(1, 2)) for k in range(4)]
        symmetries += [symmetry.flip(2) for symmetry in symmetries]
        assert any(torch.equal(out, symmetry) for symmetry in symmetries)
    assert not torch.equal(flipped, tiles)


def test_batches_run_through_seeded_permutations_epoch_by_epoch():
    order = le.batch_order(10, steps=7, batch_size=4, rng=np.random.default_rng(0))
    assert order.shape == (7, 4)
    flat = order.ravel()
    assert sorted(flat[:10]) == sorted(flat[10:20]) == list(range(10))
    assert np.array_equal(order, le.batch_order(10, 7, 4, np.random.default_rng(0)))


def test_fine_tuning_learns_separable_tiles_reproducibly_and_leaves_the_encoder_alone():
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(depth=1, img_size=TILE))
    before = {name: value.clone() for name, value in encoder.state_dict().items()}
    labels = np.repeat([0, 1], 16)
    rng = np.random.default_rng(0)
    tiles = (np.where(labels == 0, -1.0, 1.0)[:, None, None, None] + 0.3 * rng.normal(size=(32, 5, TILE, TILE))).astype(
        np.float32
    )
    config = le.FineTuning(steps=12, batch_size=8, warmup_steps=2)
    first = le.fine_tune(encoder, tiles, labels, 2, "mean", config, seed=5, progress=False)
    second = le.fine_tune(encoder, tiles, labels, 2, "mean", config, seed=5, progress=False)
    with torch.no_grad():
        predicted = first(torch.from_numpy(tiles)).argmax(dim=1).numpy()
    assert (predicted == labels).all()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(torch.equal(before[name], value) for name, value in encoder.state_dict().items())


def test_encoder_and_head_follow_their_own_learning_rates():
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(depth=1, img_size=TILE))
    tiles = np.random.default_rng(0).normal(size=(8, 5, TILE, TILE)).astype(np.float32)
    config = le.FineTuning(steps=3, batch_size=4, lr=0.0, min_lr=0.0, warmup_steps=0)
    frozen = le.fine_tune(encoder, tiles, np.arange(8) % 2, 2, "cls", config, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen.encoder.state_dict().values(), encoder.state_dict().values()))
    assert frozen.head.weight.abs().sum() > 0


def test_experiment_table_counts_wells_as_the_split_and_subsample_rules_say(results, screen):
    assert list(results.columns) == le.RESULT_COLUMNS
    assert len(results) == 2 * 2 * len(TINY.fractions) * len(TINY.seeds)
    assert results.groupby(["method", "regime", "label_fraction", "seed"]).size().eq(1).all()
    wells = screen.wells[screen.wells["Metadata_modality"] == "crispr"].reset_index(drop=True)
    labelled = ~wells["Metadata_negcon"] & wells["Metadata_gene"].notna()
    for (fraction, seed), rows in results.groupby(["label_fraction", "seed"]):
        test = le.held_out_plates(wells, seed)
        pool = Counter(wells.loc[labelled & ~test, "Metadata_gene"])
        assert (rows["n_train_wells"] == sum(math.ceil(fraction * n) for n in pool.values())).all()
        assert (rows["n_test_wells"] == (labelled & test).sum()).all()
        assert (rows["n_classes"] == len(pool)).all()
    assert results[["accuracy", "macro_f1"]].apply(lambda s: s.between(0, 1)).all().all()


def test_same_seeds_give_the_same_numbers(results, encoder_path, screen):
    again = le.label_efficiency(encoder_path, screen.field_table(), TINY, progress=False)
    pd.testing.assert_frame_equal(results, again)


def test_summary_is_mean_and_sd_over_seeds(results):
    summary = le.summarise(results)
    assert len(summary) == 2 * 2 * len(TINY.fractions)
    row = summary.iloc[0]
    mine = results[
        (results["regime"] == row["regime"])
        & (results["method"] == row["method"])
        & (results["label_fraction"] == row["label_fraction"])
    ]["accuracy"].to_numpy()
    assert row["accuracy_mean"] == pytest.approx(mine.mean())
    assert row["accuracy_sd"] == pytest.approx(np.std(mine, ddof=1))
    assert row["n_seeds"] == len(TINY.seeds)


def test_bad_experiments_are_named(encoder_path, screen):
    table = screen.field_table()
    with pytest.raises(ValueError, match="Metadata_gene"):
        le.label_efficiency(encoder_path, table.drop(columns="Metadata_gene"), TINY, progress=False)
    with pytest.raises(ValueError, match="compound"):
        le.label_efficiency(encoder_path, table, le.LabelEfficiencyConfig(modalities=("compound",)), progress=False)
    with pytest.raises(ValueError, match="label fractions"):
        le.LabelEfficiencyConfig(fractions=(0.0, 1.0))


def test_settings_table_reports_the_config():
    config = le.LabelEfficiencyConfig()
    table = le.settings_table(config).set_index("setting")["value"]
    assert table["seeds"] == len(config.seeds)
    assert table["label fractions"] == ", ".join(f"{f:.0%}" for f in config.fractions)
    assert table["fine-tuning"].startswith(f"{config.fine_tuning.steps} steps × {config.fine_tuning.batch_size} tiles")


def test_training_and_scoring_on_rows_equal_training_and_scoring_on_a_copied_subset():
    """Reading a subset by row, a batch at a time, gives the same weights and logits as copying it first."""
    torch.manual_seed(1)
    encoder = build_encoder(EncoderConfig(depth=1, img_size=TILE))
    rng = np.random.default_rng(2)
    tiles = rng.normal(size=(20, 5, TILE, TILE)).astype(np.float32)
    rows = np.array([1, 4, 5, 8, 9, 12, 15, 19])
    labels = np.arange(len(rows)) % 2
    config = le.FineTuning(steps=4, batch_size=3, warmup_steps=1)
    by_row = le.fine_tune(encoder, tiles, labels, 2, "mean", config, seed=3, progress=False, rows=rows)
    copied = le.fine_tune(encoder, tiles[rows], labels, 2, "mean", config, seed=3, progress=False)
    for (name, a), b in zip(by_row.state_dict().items(), copied.state_dict().values()):
        assert torch.equal(a, b), name
    wells = np.array([0, 1, 1, 2, 0, 2, 1, 0])
    np.testing.assert_array_equal(
        le.well_logits(by_row, tiles, wells, 3, batch_size=3, rows=rows),
        le.well_logits(by_row, tiles[rows], wells, 3, 3),
    )
