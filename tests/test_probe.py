"""Tests for cellstudy.evaluation.probe: kNN against scikit-learn, held-out plates, accuracy on planted profiles."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier

from cellstudy.data.images import write_field
from cellstudy.evaluation import probe
from cellstudy.profiling.profiles import postprocess
from cellstudy.training.train import apply_overrides, default_config, train


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_predict_matches_sklearn(k):
    rng = np.random.default_rng(k)
    reference, queries = rng.normal(size=(60, 7)), rng.normal(size=(25, 7))
    labels = rng.choice(["a", "b", "c", "d"], size=60)
    expected = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(reference, labels)
    np.testing.assert_array_equal(probe.knn_predict(reference, labels, queries, k), expected.predict(queries))


def test_vote_ties_go_to_the_smallest_label_as_in_sklearn():
    reference = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array(["zeta", "alpha", "mu"])
    queries = np.array([[1.0, 0.05]])
    expected = KNeighborsClassifier(n_neighbors=2, metric="cosine", algorithm="brute").fit(reference, labels)
    assert probe.knn_predict(reference, labels, queries, 2).tolist() == ["alpha"] == expected.predict(queries).tolist()
    with pytest.raises(ValueError, match="k must be"):
        probe.knn_predict(reference, labels, queries, 4)


def planted_profiles(noise: float, n_perturbations: int = 12, plates_per_modality: int = 3, seed: int = 0):
    """Two modalities; every plate holds each perturbation once and 16 negative controls; features =
    perturbation centroid + plate offset + noise (controls: plate offset + noise)."""
    rng = np.random.default_rng(seed)
    rows, values = [], []
    for modality in ("compound", "crispr"):
        centroids = rng.normal(size=(n_perturbations, 8))
        for plate in range(plates_per_modality):
            offset = rng.normal(scale=5.0, size=8)
            for index in range(n_perturbations + 16):
                negcon = index >= n_perturbations
                rows.append(
                    {
                        "Metadata_Plate": f"{modality}_{plate}",
                        "Metadata_modality": modality,
                        "Metadata_cell_type": "U2OS",
                        "Metadata_timepoint": 48,
                        "Metadata_negcon": negcon,
                        "Metadata_broad_sample": "DMSO" if negcon else f"{modality}_{index}",
                        "Metadata_Well": f"A{index + 1:02d}",
                    }
                )
                values.append((0 if negcon else centroids[index]) + offset + noise * rng.normal(size=8))
    return pd.concat([pd.DataFrame(rows), pd.DataFrame(np.array(values), columns=[f"f{i}" for i in range(8)])], axis=1)


def test_each_treated_well_is_classified_once_by_the_other_plates_of_its_condition():
    profiles = planted_profiles(noise=1.0)
    predictions = probe.knn_predictions(profiles, k=3)
    treated = profiles[~profiles["Metadata_negcon"]]
    assert sorted(zip(predictions["Metadata_Plate"], predictions["Metadata_Well"])) == sorted(
        zip(treated["Metadata_Plate"], treated["Metadata_Well"])
    )
    normalised = postprocess(profiles, probe.PER_PLATE)
    normalised = normalised[~normalised["Metadata_negcon"]]
    features = [c for c in normalised.columns if c.startswith("f")]
    queries = normalised["Metadata_Plate"] == "crispr_1"
    references = ~queries & (normalised["Metadata_modality"] == "crispr")
    expected = KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute").fit(
        normalised.loc[references, features], normalised.loc[references, "Metadata_broad_sample"]
    )
    mine = predictions[predictions["Metadata_Plate"] == "crispr_1"]
    assert mine["predicted"].tolist() == expected.predict(normalised.loc[queries, features]).tolist()
    assert (mine["correct"] == (mine["predicted"] == mine["Metadata_broad_sample"])).all()


def test_separable_perturbations_are_all_recognised_and_chance_is_one_in_the_labels():
    predictions = probe.knn_predictions(planted_profiles(noise=0.05))
    assert predictions["correct"].all()
    np.testing.assert_allclose(predictions["chance"], 1 / 12)


def test_accuracy_table_groups_and_adds_an_overall_row():
    predictions = probe.knn_predictions(planted_profiles(noise=1.5, seed=2))
    table = probe.accuracy_table(predictions).set_index("Metadata_modality")
    assert list(table.index) == ["compound", "crispr", "all"]
    for modality in ("compound", "crispr"):
        rows = predictions[predictions["Metadata_modality"] == modality]
        assert table.loc[modality, "accuracy"] == rows["correct"].mean()
        assert table.loc[modality, "n_wells"] == len(rows) == 3 * 12
    assert table.loc["all", "accuracy"] == predictions["correct"].mean()
    assert 0 < table.loc["all", "accuracy"] < 1


def test_plate_offsets_defeat_the_probe_without_per_plate_normalisation():
    profiles = planted_profiles(noise=0.05)
    raw = probe.knn_predictions(profiles, postprocessing=None)["correct"].mean()
    assert raw < probe.knn_predictions(profiles)["correct"].mean() == 1.0


def test_labels_unrelated_to_the_features_score_near_chance():
    profiles = planted_profiles(noise=0.05, n_perturbations=40, seed=1)
    treated = ~profiles["Metadata_negcon"]
    shuffled = profiles.copy()
    shuffled.loc[treated, "Metadata_broad_sample"] = np.random.default_rng(0).permutation(
        profiles.loc[treated, "Metadata_broad_sample"].to_numpy()
    )
    assert probe.knn_predictions(shuffled)["correct"].mean() < 0.1


def test_missing_features_and_single_plates_are_named():
    profiles = planted_profiles(0.1)
    profiles.loc[3, "f2"] = np.nan
    with pytest.raises(ValueError, match="A04"):
        probe.knn_predictions(profiles)
    with pytest.raises(ValueError, match="two plates"):
        probe.knn_predictions(planted_profiles(0.1, plates_per_modality=1))


def test_compare_encoders_scores_pretrained_random_and_pixel_features(tmp_path):
    config = apply_overrides(
        default_config("mae"),
        {
            "encoder": {"depth": 1, "img_size": 32},
            "crops": {"global_size": 32, "region_size": 32},
            "train": {"steps": 1, "batch_size": 2, "warmup_steps": 0, "device": "cpu"},
            "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
        },
    )
    rng = np.random.default_rng(0)
    rows = []
    for plate in ("P1", "P2"):
        for index, sample in enumerate(["DMSO", "DMSO", "DMSO", "a", "b"]):
            well = f"A{index + 1:02d}"
            image = rng.poisson(100, size=(5, 64, 64)).astype(np.uint16)
            image[:, 20:30, 20:30] += np.uint16(2000 + 500 * index)
            write_field(tmp_path / plate, well, 1, image)
            rows.append(
                {
                    "Metadata_Plate": plate,
                    "Metadata_Well": well,
                    "Metadata_modality": "compound",
                    "Metadata_cell_type": "U2OS",
                    "Metadata_timepoint": 48,
                    "Metadata_negcon": sample == "DMSO",
                    "Metadata_broad_sample": sample,
                    "folder": str(tmp_path / plate),
                    "well": well,
                    "field": 1,
                }
            )
    train(config, [rng.poisson(100, size=(5, 64, 64)).astype(np.uint16)], tmp_path / "mae", progress=False)
    result = probe.compare_encoders(tmp_path / "mae" / "encoder.pt", pd.DataFrame(rows), progress=False)
    assert result.groupby("features").size().to_dict() == {"pixel statistics": 4, "pre-trained": 4, "random init": 4}
    table = probe.comparison_table(result)
    assert table["features"].tolist() == ["pre-trained"] * 2 + ["random init"] * 2 + ["pixel statistics"] * 2
    assert table["Metadata_modality"].tolist() == ["compound", "all"] * 3


def test_compare_encoders_loads_both_encoders_on_the_device_asked(monkeypatch):
    """The pre-trained and the random-init encoder go to ``device`` (the GPU of a full run), not the CPU."""
    seen = []

    class Loaded(Exception):
        """Stops the comparison once both encoders are loaded."""

    def pretrained(path, device):
        seen.append(("pre-trained", device))
        return SimpleNamespace(method="mae", encoder=None)

    def random_init(path, seed, device):
        seen.append(("random init", device))
        raise Loaded

    monkeypatch.setattr(probe, "load_encoder", pretrained)
    monkeypatch.setattr(probe.embed, "random_init_encoder", random_init)
    monkeypatch.setattr(probe.embed, "encoder_featuriser", lambda encoder, pooling: None)
    with pytest.raises(Loaded):
        probe.compare_encoders("encoder.pt", pd.DataFrame(), device="cuda")
    assert seen == [("pre-trained", "cuda"), ("random init", "cuda")]


def test_paired_difference_matches_the_accuracy_gap_on_shared_wells():
    good = probe.knn_predictions(planted_profiles(noise=0.3, seed=3)).assign(features="good")
    noisy = probe.knn_predictions(planted_profiles(noise=3.0, seed=3)).assign(features="noisy")
    result = probe.paired_difference(pd.concat([good, noisy]), "good", "noisy")
    assert result["n"] == len(good)
    assert result["mean_difference"] == pytest.approx(good["correct"].mean() - noisy["correct"].mean())
    assert result["ci_low"] > 0 and result["wilcoxon_p_value"] < 0.05


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.01, 0.05, "helps"),
        (-0.05, -0.01, "hurts"),
        (-0.01, 0.02, "no clear difference"),
        (0.0, 0.02, "no clear difference"),
    ],
)
def test_pretraining_verdict_reads_the_interval(low, high, expected):
    assert probe.pretraining_verdict({"ci_low": low, "ci_high": high, "mean_difference": (low + high) / 2}) == expected


def test_accuracy_by_modality_and_description_read_the_comparison_table():
    knn = pd.DataFrame(
        {
            "Metadata_modality": ["compound", "all"] * 3,
            "features": ["pre-trained"] * 2 + ["random init"] * 2 + ["pixel statistics"] * 2,
            "accuracy": [0.2, 0.25, 0.1, 0.125, 0.05, 0.0625],
            "chance": [0.01, 0.02] * 3,
            "n_wells": [40, 80] * 3,
        }
    )
    wide = probe.accuracy_by_modality(knn)
    assert wide.loc["all", "pre-trained"] == 0.25 and wide.loc["compound", "chance"] == 0.01
    text = probe.describe_check(knn, {"mean_difference": 0.125, "ci_low": 0.05, "ci_high": 0.2})
    assert "80 held-out" in text and "25.0%" in text and "+12.5%" in text and "**it helps**" in text
