"""Tests for cellstudy.evaluation.retrieval: the paper's pair rules on tables whose answers are known by hand,
AP against scikit-learn, the significance test against copairs, BH against a hand computation."""

from __future__ import annotations

from pathlib import Path

import bench
import numpy as np
import pandas as pd
import pytest
from copairs import map as copairs_map
from sklearn.metrics import average_precision_score
from sklearn.metrics.pairwise import cosine_similarity

from cellstudy.evaluation import retrieval
from cellstudy.evaluation.retrieval import MapSettings

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cpjump1" / "metadata"
needs_shared = pytest.mark.skipif(not (METADATA / "experiment-metadata.tsv").is_file(), reason="shared data absent")
FAST = MapSettings(null_size=2000, seed=0)
CONDITION = {"Metadata_cell_type": "U2OS", "Metadata_modality": "compound", "Metadata_timepoint": 24}


def at_angles(degrees: list[float]) -> np.ndarray:
    """Unit vectors in a plane at the given angles: cosine similarity is the cosine of the angle between them."""
    radians = np.deg2rad(degrees)
    return np.column_stack([np.cos(radians), np.sin(radians)])


def table(rows: list[dict], vectors: np.ndarray, condition: dict = CONDITION) -> pd.DataFrame:
    metadata = pd.DataFrame(rows).assign(**{k: v for k, v in condition.items() if k not in rows[0]})
    features = pd.DataFrame(vectors, columns=[f"f{i}" for i in range(vectors.shape[1])])
    return pd.concat([metadata, features], axis=1)


def well(plate: str, sample: str, negcon: bool = False, **extra) -> dict:
    return {"Metadata_Plate": plate, "Metadata_broad_sample": sample, "Metadata_negcon": negcon, **extra}


@pytest.fixture
def replicate_table() -> pd.DataFrame:
    """Plate P1: compound A at 0, 10, 50 degrees, B at 200-220, DMSO at 30 and 75; plate P2: DMSO at 5.

    Query A@0 ranks A@10 (+), DMSO@30 (-), A@50 (+), DMSO@75 (-): AP = (1/1 + 2/3) / 2 = 5/6.
    Were the other plate's DMSO@5 a negative it would rank first: AP = (1/2 + 2/4) / 2 = 1/2.
    Query A@10: A@0 (+), DMSO@30 (-), A@50 (+), DMSO@75 (-): AP = 5/6.
    Query A@50: DMSO@30 (-), DMSO@75 (-), A@10 (+), A@0 (+): AP = (1/3 + 2/4) / 2 = 5/12.
    B wells are never negatives of A; B ranks B first: AP = 1.
    """
    rows = [well("P1", "A"), well("P1", "A"), well("P1", "A"), well("P1", "B"), well("P1", "B"), well("P1", "B")]
    rows += [well("P1", "DMSO", True), well("P1", "DMSO", True), well("P2", "DMSO", True)]
    return table(rows, at_angles([0, 10, 50, 200, 210, 220, 30, 75, 5]))


def test_replicate_ap_by_hand_and_other_plates_negcon_never_a_negative(replicate_table):
    ap = retrieval.average_precisions(replicate_table, retrieval.REPLICATE_RULE)
    np.testing.assert_allclose(ap["average_precision"][:6], [5 / 6, 5 / 6, 5 / 12, 1, 1, 1])
    assert ap["n_total_pairs"][:3].tolist() == [4, 4, 4]  # 2 replicates + the 2 DMSO wells of P1


def test_replicate_retrieval_averages_per_perturbation_and_drops_negcon_queries(replicate_table):
    result = retrieval.replicate_retrieval(replicate_table, FAST)
    assert result["Metadata_broad_sample"].tolist() == ["A", "B"]
    np.testing.assert_allclose(result["mean_average_precision"], [25 / 36, 1])
    assert result["n_profiles"].tolist() == [3, 3]
    assert (result["task"] == retrieval.REPLICATE_RETRIEVAL).all()
    assert result[list(CONDITION)].drop_duplicates().to_dict("records") == [CONDITION]


def random_plates(seed: int = 0, n_plates: int = 3, n_samples: int = 6, n_negcon: int = 5) -> pd.DataFrame:
    """Random profiles (no ties): every sample once per plate, negative controls on every plate."""
    rng = np.random.default_rng(seed)
    rows = [
        well(f"P{p}", sample, sample == "DMSO")
        for p in range(n_plates)
        for sample in [f"s{i}" for i in range(n_samples)] + ["DMSO"] * n_negcon
    ]
    return table(rows, rng.normal(size=(len(rows), 8)))


def test_replicate_ap_equals_sklearn_on_the_papers_candidate_set():
    profiles = random_plates()
    ap = retrieval.average_precisions(profiles, retrieval.REPLICATE_RULE)
    similarity = cosine_similarity(profiles[[f"f{i}" for i in range(8)]])
    for query in np.flatnonzero(~profiles["Metadata_negcon"]):
        me = profiles.iloc[query]
        same = (profiles["Metadata_broad_sample"] == me["Metadata_broad_sample"]).to_numpy()
        negatives = (profiles["Metadata_negcon"] & (profiles["Metadata_Plate"] == me["Metadata_Plate"])).to_numpy()
        candidates = (same | negatives) & (np.arange(len(profiles)) != query)
        expected = average_precision_score(same[candidates], similarity[query, candidates])
        assert ap["average_precision"][query] == pytest.approx(expected)


def test_ties_rank_the_positive_first_unlike_sklearn():
    rows = [well("P1", "A"), well("P1", "A"), well("P1", "DMSO", True)]
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])  # the replicate and the control tie
    ap = retrieval.average_precisions(table(rows, vectors), retrieval.REPLICATE_RULE)
    assert ap["average_precision"][0] == 1.0
    assert average_precision_score([1, 0], [0.6, 0.6]) == 0.5


def test_copairs_method_agrees_with_copairs():
    profiles = random_plates(seed=3, n_plates=4, n_samples=10)
    profiles.loc[profiles["Metadata_broad_sample"] == "s0", "f0"] += 4  # s0 and s1 retrievable
    profiles.loc[profiles["Metadata_broad_sample"] == "s1", "f1"] += 4
    ap = retrieval.average_precisions(profiles, retrieval.REPLICATE_RULE)
    ap = ap[~ap["Metadata_negcon"]]
    settings = MapSettings(null_size=50_000, method="copairs")
    ours = retrieval.mean_average_precisions(ap, "Metadata_broad_sample", settings)
    theirs = copairs_map.mean_average_precision(
        ap, ["Metadata_broad_sample"], 50_000, 0.05, seed=0, progress_bar=False, cache_dir=None
    )
    np.testing.assert_allclose(ours["mean_average_precision"], theirs["mean_average_precision"])
    np.testing.assert_allclose(ours["p_value"], theirs["p_value"], atol=0.03)  # copairs' ties fall to float32 rounding
    np.testing.assert_allclose(ours["corrected_p_value"], theirs["corrected_p_value"], atol=0.05)
    assert set(ours.nsmallest(2, "p_value")["Metadata_broad_sample"]) == {"s0", "s1"}


def two_well_tie(n_negcon: int = 60) -> pd.DataFrame:
    """Compound A once on each of two plates; each A well ranks the other first among its plate's ``n_negcon`` DMSO wells."""
    rows = [well("P1", "A"), well("P2", "A")] + [well(f"P{p}", "DMSO", True) for p in (1, 2) for _ in range(n_negcon)]
    rng = np.random.default_rng(0)
    negcon = rng.normal(size=(2 * n_negcon, 6)) * np.array([0, 1, 1, 1, 1, 1])  # orthogonal to the A axis
    return table(rows, np.vstack([[5.0, 0, 0, 0, 0, 0.1], [5.0, 0, 0, 0, 0.1, 0], negcon]))


def test_two_well_tie_gets_the_chance_of_two_first_ranks():
    """Each query ranks its one replicate first among 61 candidates: chance 1/61 per query, (1/61)^2 for both."""
    result = retrieval.replicate_retrieval(two_well_tie(), MapSettings(null_size=100_000))
    assert result["mean_average_precision"].item() == 1.0
    assert result["p_value"].item() == pytest.approx((1 / 61) ** 2, rel=1e-9)
    assert result["exact_null"].item()
    paper = retrieval.replicate_retrieval(two_well_tie(), MapSettings(null_size=100_000, method="paper"))
    assert paper["p_value"].item() == pytest.approx(1 / 100_001)  # the strict rule: a tie is never counted


def test_study_p_value_of_one_query_is_its_rank_over_the_candidates():
    ap = pd.DataFrame({"unit": ["q"], "average_precision": [1 / 3], "n_pos_pairs": [1], "n_total_pairs": [61]})
    result = retrieval.mean_average_precisions(ap, "unit", MapSettings())
    assert result["p_value"].item() == pytest.approx(3 / 61, rel=1e-12)  # ranks 1, 2 or 3 do as well


def hand_bh(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg by its definition: min over j >= i of p_(j) * m / j, capped at 1."""
    m = len(p_values)
    order = np.argsort(p_values)
    scaled = p_values[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1)
    return adjusted[np.argsort(order)]


def test_hand_bh_reference():
    np.testing.assert_allclose(hand_bh(np.array([0.01, 0.04, 0.03])), [0.03, 0.04, 0.04])


def test_bh_correction_is_within_each_group():
    day1 = random_plates(seed=5, n_samples=8)
    day2 = random_plates(seed=6, n_samples=5).assign(Metadata_timepoint=48)
    day2.loc[day2["Metadata_broad_sample"] == "s2", "f3"] += 5
    result = retrieval.replicate_retrieval(pd.concat([day1, day2], ignore_index=True), FAST)
    for _, group in result.groupby("Metadata_timepoint"):
        np.testing.assert_allclose(group["corrected_p_value"], hand_bh(group["p_value"].to_numpy()))
    assert result.groupby("Metadata_timepoint").size().tolist() == [8, 5]


def test_same_seed_same_numbers():
    profiles = random_plates(seed=7, n_plates=4, n_negcon=40)  # four queries of 3 among 43: a Monte-Carlo null
    first = retrieval.replicate_retrieval(profiles, FAST)
    assert not first["exact_null"].any()
    pd.testing.assert_frame_equal(first, retrieval.replicate_retrieval(profiles, FAST))
    other = retrieval.replicate_retrieval(profiles, MapSettings(null_size=2000, seed=1))
    assert not np.array_equal(first["p_value"], other["p_value"])


def consensus_row(sample: str, targets: str | None, modality: str = "compound", **extra) -> dict:
    condition = {**CONDITION, "Metadata_modality": modality}
    return {
        "Metadata_broad_sample": sample,
        "Metadata_target_list": targets,
        "Metadata_negcon": False,
        **condition,
        **extra,
    }


def test_absolute_cosine_makes_an_anticorrelated_sister_a_match():
    rows = [consensus_row("c1", "T"), consensus_row("c2", "T|X"), consensus_row("c3", "U"), consensus_row("c4", "W")]
    vectors = np.array([[1.0, 0.0, 0.0], [-1.0, 0.1, 0.0], [0.5, 0.5, 0.7], [0.6, -0.4, 0.6]])
    result = retrieval.sister_matching(table(rows, vectors), settings=FAST)
    assert result["Metadata_matching_target"].tolist() == ["T"]  # the only shared target
    assert result["mean_average_precision"].item() == 1.0  # each ranks the other first by |cosine|
    crispr = [consensus_row(r["Metadata_broad_sample"], r["Metadata_target_list"], "crispr") for r in rows]
    ap = retrieval.average_precisions(retrieval.matchable(table(crispr, vectors)), retrieval.CRISPR_SISTER_RULE)
    assert ap.loc[ap["Metadata_broad_sample"] == "c1", "average_precision"].item() == pytest.approx(1 / 3)


def test_sister_matching_keeps_replicable_perturbations_and_genes_with_two_guides():
    rows = [
        consensus_row("g1a", "G1", "crispr", Metadata_gene="G1"),
        consensus_row("g1b", "G1", "crispr", Metadata_gene="G1"),
        consensus_row("g2a", "G2", "crispr", Metadata_gene="G2"),
        consensus_row("g2b", "G2", "crispr", Metadata_gene="G2"),  # not replicable
        consensus_row("g3a", "G3", "crispr", Metadata_gene="G3"),
        consensus_row("g3b", "G3", "crispr", Metadata_gene="G3"),
        consensus_row("ntc", None, "crispr", Metadata_gene=None, Metadata_negcon=True),
        consensus_row("orf1", "G1", "orf", Metadata_gene="G1"),
        consensus_row("orf2", "G1", "orf", Metadata_gene="G1"),
    ]
    vectors = np.random.default_rng(0).normal(size=(len(rows), 5))
    profiles = table(rows, vectors)
    replicates = profiles[retrieval.GROUP_COLUMNS + ["Metadata_broad_sample"]].assign(
        retrieved=profiles["Metadata_broad_sample"] != "g2b"
    )
    result = retrieval.sister_matching(profiles, replicates, FAST)
    assert result["Metadata_matching_target"].tolist() == ["G1", "G3"]  # G2 has one replicable guide; ORF skipped
    assert (result["Metadata_modality"] == "crispr").all()
    assert result["n_profiles"].tolist() == [2, 2]


def test_compound_gene_positives_cross_modality_only():
    """c1 (T|X) and c2 (T) target T, c3 targets U; guides g1 (T) and g2 (U); X is not perturbed.
    c1's positives: g1 only (never the compound c2); its negatives: g2 only (other modality, other target)."""
    compounds = [consensus_row("c1", "T|X"), consensus_row("c2", "T"), consensus_row("c3", "U")]
    guides = [
        consensus_row("g1", "T", "crispr", Metadata_timepoint=96),
        consensus_row("g2", "U", "crispr", Metadata_timepoint=96),
    ]
    c1 = np.array([1.0, 0.0, 0.0])
    vectors = np.array([c1, [0.2, 1.0, 0.0], [0.0, 0.3, 1.0], -c1, [0.0, 0.0, 1.0]])
    profiles = table(compounds + guides, vectors)
    result = retrieval.compound_gene_matching(profiles, profiles, settings=FAST)
    assert result[["Metadata_genetic_modality", "Metadata_genetic_timepoint"]].drop_duplicates().values.tolist() == [
        ["crispr", 96]
    ]
    assert result["Metadata_matching_target"].tolist() == ["T", "U"]
    ap = retrieval.average_precisions(retrieval.matchable(profiles), retrieval.COMPOUND_GENE_RULE)
    first = ap[ap["Metadata_broad_sample"] == "c1"]
    assert first["Metadata_matching_target"].tolist() == ["T"]
    assert (first["n_pos_pairs"].item(), first["n_total_pairs"].item()) == (1, 2)
    assert first["average_precision"].item() == 1.0  # g1 = -c1: a perfect match by absolute cosine


def test_fraction_retrieved_by_hand():
    """Day 24: genes a, b, c; a and b rest on the same compounds. Day 48: d and e, and a group without units."""
    results = pd.DataFrame(
        {
            "task": "sister_matching",
            **{k: [v] * 6 for k, v in CONDITION.items()},
            "Metadata_matching_target": ["a", "b", "c", "d", "e", pd.NA],
            "n_profiles": [2, 2, 2, 3, 2, 0],
            "mean_average_precision": [0.9, 0.8, 0.1, 0.2, 0.5, np.nan],
            "retrieved": [True, True, False, False, True, False],
            "perturbations": ["x|y", "x|y", "z", "u|v|w", "u|v", ""],
        }
    ).assign(Metadata_timepoint=[24, 24, 24, 48, 48, 72])
    summary = retrieval.fraction_retrieved(results)
    assert summary["fraction_retrieved"].tolist()[:2] == [pytest.approx(2 / 3), 0.5]
    assert np.isnan(summary["fraction_retrieved"].iloc[2])  # the group without units
    assert summary["n"].tolist() == [3, 2, 0]
    assert summary["n_sets"].tolist() == [2, 2, 0]
    assert summary["n_retrieved"].tolist() == [2, 1, 0]
    assert summary["retrieved_sets"].tolist() == [1, 1, 0]
    assert summary["mean_average_precision"].tolist()[:2] == [pytest.approx(0.6), pytest.approx(0.35)]


def test_missing_columns_and_zero_profiles_are_named(replicate_table):
    with pytest.raises(ValueError, match="Metadata_Plate"):
        retrieval.replicate_retrieval(replicate_table.drop(columns="Metadata_Plate"), FAST)
    replicate_table.loc[2, ["f0", "f1"]] = 0.0
    with pytest.raises(ValueError, match="all zero"):
        retrieval.replicate_retrieval(replicate_table, FAST)


def test_a_query_without_negatives_is_left_out_not_misscored():
    """c1 targets T, V and W: every guide shares one of them, so c1 has positives but no negative."""
    compounds = [consensus_row("c1", "T|V|W"), consensus_row("c2", "T"), consensus_row("c3", "V")]
    guides = [consensus_row(f"g{i}", gene, "crispr") for i, gene in enumerate("TVW", start=1)]
    profiles = retrieval.matchable(table(compounds + guides, np.random.default_rng(3).normal(size=(6, 4))))
    with pytest.warns(UserWarning, match="c1"):
        ap = retrieval.average_precisions(profiles, retrieval.COMPOUND_GENE_RULE)
    assert "c1" not in set(ap["Metadata_broad_sample"])
    second = ap[ap["Metadata_broad_sample"] == "c2"]
    assert (second["n_pos_pairs"].item(), second["n_total_pairs"].item()) == (1, 3)  # g1; g2 and g3


@needs_shared
def test_run_tasks_finds_planted_structure_and_not_noise():
    from cellstudy.data import cpjump1

    wells = cpjump1.well_table(profiled_only=True)
    u2os = wells[wells["Metadata_cell_type"] == "U2OS"]
    first_timepoint = u2os.groupby("Metadata_modality")["Metadata_timepoint"].transform("min")
    wells = u2os[u2os["Metadata_timepoint"] == first_timepoint]  # one condition per modality, all its plates
    planted = bench.planted_profiles(wells.reset_index(drop=True), n_features=32, seed=0)
    noise = planted.copy()
    features = [c for c in planted.columns if c.startswith("feature_")]
    noise[features] = np.random.default_rng(1).normal(size=(len(noise), len(features)))
    settings = MapSettings(null_size=1000, seed=0)
    found = retrieval.fraction_retrieved(retrieval.run_tasks(planted, settings), by=["task"]).set_index("task")
    null = retrieval.fraction_retrieved(retrieval.run_tasks(noise, settings), by=["task"]).set_index("task")
    assert set(found.index) == {
        retrieval.REPLICATE_RETRIEVAL,
        retrieval.SISTER_MATCHING,
        retrieval.COMPOUND_GENE_MATCHING,
    }
    assert found.loc[retrieval.REPLICATE_RETRIEVAL, "fraction_retrieved"] > 0.5
    # pure noise: replicate retrieval at the false-discovery level; the matching tasks keep their groups, without units
    assert null.loc[retrieval.REPLICATE_RETRIEVAL, "fraction_retrieved"] < 0.1
    assert null.loc[[retrieval.SISTER_MATCHING, retrieval.COMPOUND_GENE_MATCHING], "n"].sum() <= 2


def test_duplicate_wells_are_refused_by_name():
    profiles = random_plates(seed=1).assign(Metadata_Well=lambda t: [f"W{i:02d}" for i in range(len(t))])
    doubled = pd.concat([profiles, profiles.iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match="'Metadata_Plate': 'P0', 'Metadata_Well': 'W03'"):
        retrieval.replicate_retrieval(doubled, FAST)


def test_a_plate_without_negative_controls_is_refused_by_name():
    profiles = random_plates(seed=2)
    without = profiles[~(profiles["Metadata_negcon"] & (profiles["Metadata_Plate"] == "P1"))]
    with pytest.raises(ValueError, match=r"no negative.*\['P1'\]"):
        retrieval.replicate_retrieval(without, FAST)


def test_a_non_boolean_negcon_column_is_refused_by_name():
    profiles = random_plates(seed=2)
    with pytest.raises(ValueError, match="Metadata_negcon.*boolean"):
        retrieval.replicate_retrieval(profiles.assign(Metadata_negcon=profiles["Metadata_negcon"].astype(int)), FAST)


def test_a_constant_feature_is_named():
    profiles = random_plates(seed=2).assign(f3=2.5)
    with pytest.warns(UserWarning, match=r"constant.*\['f3'\]"):
        retrieval.replicate_retrieval(profiles, FAST)


def test_a_group_without_replicable_perturbations_is_reported():
    rows = [consensus_row(f"g{i}", gene, "crispr", Metadata_gene=gene) for i, gene in enumerate("AABB")]
    day2 = [{**row, "Metadata_timepoint": 48} for row in rows]
    profiles = table(rows + day2, np.random.default_rng(0).normal(size=(8, 5)))
    replicates = profiles[retrieval.GROUP_COLUMNS + ["Metadata_broad_sample"]].assign(
        retrieved=profiles["Metadata_timepoint"] == 24
    )
    with pytest.warns(UserWarning, match="'Metadata_timepoint': 48"):
        result = retrieval.sister_matching(profiles, replicates, FAST)
    reported = result[result["Metadata_timepoint"] == 48]
    assert reported["n_profiles"].tolist() == [0]
    assert result.loc[result["Metadata_timepoint"] == 24, "Metadata_matching_target"].tolist() == ["A", "B"]
    summary = retrieval.fraction_retrieved(result)
    assert summary.loc[summary["Metadata_timepoint"] == 48, "n"].item() == 0


def one_feature_plates(seed: int = 5, n_plates: int = 3, n_samples: int = 6, n_negcon: int = 6) -> pd.DataFrame:
    """Random one-feature profiles (distinct values, some negative, one exactly zero)."""
    profiles = random_plates(seed, n_plates, n_samples, n_negcon)[
        ["Metadata_Plate", "Metadata_broad_sample", "Metadata_negcon", *CONDITION]
    ]
    values = np.random.default_rng(seed).permutation(np.arange(len(profiles)) - 5.0)[:, None]
    return pd.concat([profiles, pd.DataFrame(values, columns=["f0"])], axis=1)


def test_euclidean_similarity_gives_copairs_own_euclidean_ap_on_one_feature():
    """One feature: cosine is only the sign; minus the distance ranks as copairs' ``1 / (1 + distance)``."""
    profiles = one_feature_plates()
    ours = retrieval.average_precisions(profiles, retrieval.REPLICATE_RULE, MapSettings(similarity="euclidean"))
    metadata = profiles[["Metadata_Plate", "Metadata_broad_sample", "Metadata_negcon"]]
    theirs = copairs_map.average_precision(
        metadata,
        profiles[["f0"]].to_numpy(),
        pos_sameby=["Metadata_broad_sample"],
        pos_diffby=[],
        neg_sameby=["Metadata_Plate"],
        neg_diffby=["Metadata_negcon"],
        distance="euclidean",
        progress_bar=False,
    )
    np.testing.assert_allclose(ours["average_precision"], theirs["average_precision"])
    values = profiles["f0"].to_numpy()
    query = 0
    same = (profiles["Metadata_broad_sample"] == profiles["Metadata_broad_sample"][query]).to_numpy()
    negatives = (
        profiles["Metadata_negcon"] & (profiles["Metadata_Plate"] == profiles["Metadata_Plate"][query])
    ).to_numpy()
    candidates = (same | negatives) & (np.arange(len(profiles)) != query)
    expected = average_precision_score(same[candidates], -np.abs(values[candidates] - values[query]))
    assert ours["average_precision"][query] == pytest.approx(expected)


def test_euclidean_similarity_is_sign_free_where_the_rule_takes_the_absolute_cosine():
    """Compound sisters at +2 and -2 match under the absolute rule, as anti-correlated profiles do by |cosine|."""
    rows = [
        consensus_row("a", "G1"),
        consensus_row("b", "G1"),
        consensus_row("c", "G2"),
        consensus_row("d", "G3"),
    ]
    profiles = retrieval.matchable(table(rows, np.array([[2.0], [-2.0], [1.0], [0.5]])))
    euclidean = MapSettings(similarity="euclidean")
    ap = retrieval.average_precisions(profiles, retrieval.COMPOUND_SISTER_RULE, euclidean)
    first = ap[ap["Metadata_broad_sample"] == "a"]["average_precision"].item()
    assert first == 1.0  # b at -2 is a's mirror image: sign-free distance 0, ranked first
    plain = retrieval.average_precisions(profiles, retrieval.CRISPR_SISTER_RULE, euclidean)
    assert plain[plain["Metadata_broad_sample"] == "a"]["average_precision"].item() == pytest.approx(1 / 3)


def test_euclidean_similarity_scores_a_zero_profile_and_an_unknown_similarity_is_refused():
    profiles = one_feature_plates()
    assert (profiles["f0"] == 0).any()
    retrieval.average_precisions(profiles, retrieval.REPLICATE_RULE, MapSettings(similarity="euclidean"))
    with pytest.raises(ValueError, match="all zero"):
        retrieval.average_precisions(profiles, retrieval.REPLICATE_RULE)
    with pytest.raises(ValueError, match="similarity must be one of"):
        MapSettings(similarity="manhattan")


def test_run_tasks_each_equals_run_tasks_under_each_test():
    profiles = random_plates(seed=2, n_plates=3, n_samples=6).assign(Metadata_target_list="G1")
    settings = [FAST, MapSettings(null_size=2000, method="paper")]
    for each, single in zip(retrieval.run_tasks_each(profiles, settings), settings, strict=True):
        pd.testing.assert_frame_equal(each, retrieval.run_tasks(profiles, single))
    with pytest.raises(ValueError, match="same similarity"):
        retrieval.run_tasks_each(profiles, [FAST, MapSettings(similarity="euclidean")])
