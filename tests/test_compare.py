import numpy as np
import pandas as pd
import pytest
from screens import compound_screen

from cellstudy.evaluation import compare, retrieval


def results_for(method, maps, retrieved, modality="compound", sets=None):
    n = len(maps)
    units = [f"p{i}" for i in range(n)]
    return pd.DataFrame(
        {
            "method": method,
            "task": "replicate_retrieval",
            "Metadata_cell_type": "U2OS",
            "Metadata_modality": modality,
            "Metadata_timepoint": 48,
            "Metadata_genetic_modality": pd.NA,
            "Metadata_genetic_timepoint": pd.NA,
            "Metadata_broad_sample": units,
            "n_profiles": 2,
            "mean_average_precision": maps,
            "retrieved": retrieved,
            "perturbations": units if sets is None else sets,
        }
    )


def test_summary_fraction_and_map_with_intervals():
    results = results_for("dino", [0.2, 0.4, 0.6, 0.8, 0.5], [False, True, True, True, False])
    row = compare.summary_with_ci(results).iloc[0]
    assert (row["n"], row["n_sets"], row["n_retrieved"]) == (5, 5, 3)
    assert row["fraction_retrieved"] == pytest.approx(0.6)
    assert row["mAP"] == pytest.approx(0.5)
    assert row["mAP_low"] <= 0.5 <= row["mAP_high"] and row["fraction_low"] <= 0.6 <= row["fraction_high"]


def test_units_on_too_few_independent_sets_get_no_interval():
    """Ten target genes all retrieved, resting on the same two compound sets: an interval of [1, 1] says nothing."""
    results = results_for("dino", np.linspace(0.5, 0.9, 10), [True] * 10, sets=["c1|c2"] * 6 + ["c3"] * 4)
    row = compare.summary_with_ci(results).iloc[0]
    assert (row["n"], row["n_sets"], row["retrieved_sets"]) == (10, 2, 2)
    assert row["fraction_retrieved"] == 1.0 and np.isnan(row["fraction_low"]) and np.isnan(row["fraction_high"])
    reported = pd.concat([results, results_for("dino", [np.nan], [False]).assign(n_profiles=0, perturbations="")])
    assert compare.summary_with_ci(reported).iloc[0]["n"] == 10  # a group without units adds none


def test_paired_comparison_matches_units_not_rows():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.8, 30)
    a = results_for("dino", base + 0.1, base > 0)
    b = results_for("classical", base, base > 0).iloc[::-1]  # same units, other order
    row = compare.paired_comparisons(pd.concat([a, b]), [("dino", "classical")]).iloc[0]
    assert row["n"] == 30
    assert row["mean_difference"] == pytest.approx(0.1)
    assert row["wilcoxon_p_value"] < 1e-4


def test_paired_comparison_counts_perturbation_sets_not_units():
    base = np.linspace(0.1, 0.8, 12)
    sets = ["s1"] * 6 + ["s2"] * 3 + ["s3"] * 3
    a = results_for("dino", base + 0.3, base > 0, sets=sets)
    b = results_for("classical", base, base > 0, sets=sets)
    paired = compare.with_verdicts(compare.paired_comparisons(pd.concat([a, b]), [("dino", "classical")]))
    row = paired.iloc[0]
    assert (row["n"], row["n_units"]) == (3, 12)
    assert np.isnan(row["ci_low"]) and np.isnan(row["wilcoxon_p_value"])
    assert row["verdict"] == "too few independent units"


def genetic_consensus(orf_weight, seed=0, n_genes=30, n_features=40):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_genes, n_features))
    rows, values = [], []
    for gene, direction in enumerate(directions):
        for guide in range(2):
            rows.append(
                {
                    "Metadata_modality": "crispr",
                    "Metadata_timepoint": 144,
                    "Metadata_broad_sample": f"g{gene}_{guide}",
                    "Metadata_gene": f"G{gene}",
                }
            )
            values.append(direction + 0.5 * rng.normal(size=n_features))
        rows.append(
            {
                "Metadata_modality": "orf",
                "Metadata_timepoint": 96,
                "Metadata_broad_sample": f"orf{gene}",
                "Metadata_gene": f"G{gene}",
            }
        )
        values.append(orf_weight * direction + rng.normal(size=n_features))
    metadata = pd.DataFrame(rows).assign(Metadata_cell_type="U2OS", Metadata_negcon=False)
    return pd.concat([metadata, pd.DataFrame(values, columns=[f"f{i}" for i in range(n_features)])], axis=1)


def test_crispr_orf_similarity_detects_a_planted_positive_correlation():
    table, summary = compare.crispr_orf_similarity(genetic_consensus(orf_weight=0.4), n_permutations=2000)
    assert summary["n_genes"] == 30
    assert summary["mean_matched"] > summary["mean_unmatched"] + 0.1
    assert summary["p_value"] < 0.01
    assert (table["pair"] == "matched").sum() == 30 and (table["pair"] == "unmatched").sum() == 30 * 29
    matched = table[table["pair"] == "matched"]
    assert summary["mean_matched"] == pytest.approx(matched["cosine"].mean())


def test_crispr_orf_similarity_finds_nothing_without_a_relation():
    _, summary = compare.crispr_orf_similarity(genetic_consensus(orf_weight=0.0, seed=3), n_permutations=2000)
    assert summary["p_value"] > 0.05


def condition_rows(task, modality, timepoint, genetic=None, genetic_timepoint=None, **values):
    return {
        "task": task,
        "Metadata_cell_type": "U2OS",
        "Metadata_modality": modality,
        "Metadata_timepoint": timepoint,
        "Metadata_genetic_modality": genetic,
        "Metadata_genetic_timepoint": genetic_timepoint,
        **values,
    }


def test_task_label_names_the_genetic_side_of_compound_gene_rows_only():
    frame = pd.DataFrame(
        [
            condition_rows("replicate_retrieval", "orf", 96),
            condition_rows("compound_gene_matching", "compound", 48, "crispr", 144),
        ]
    )
    assert compare.task_label(frame).tolist() == [
        "replicate_retrieval / orf",
        "compound_gene_matching / compound–crispr",
    ]
    assert compare.task_label(frame.drop(columns="Metadata_genetic_modality"))[1] == "compound_gene_matching / compound"


def test_paper_reference_takes_the_same_condition_and_the_range_over_all():
    paper = pd.DataFrame(
        [
            condition_rows("replicate_retrieval", "orf", 96, fraction_retrieved=0.2),
            condition_rows("replicate_retrieval", "orf", 48, fraction_retrieved=0.4),
            condition_rows("compound_gene_matching", "compound", 48, "crispr", 144, fraction_retrieved=0.03),
            condition_rows("compound_gene_matching", "compound", 48, "crispr", 96, fraction_retrieved=0.01),
            condition_rows("sister_matching", "compound", 48, fraction_retrieved=0.25),
        ]
    )
    paper["Metadata_genetic_timepoint"] = paper["Metadata_genetic_timepoint"].astype("Int64")
    results = pd.DataFrame(
        [  # as read back from a CSV: time points as floats, NaN for missing
            condition_rows("replicate_retrieval", "orf", 96.0, np.nan, np.nan, method="dino"),
            condition_rows("replicate_retrieval", "orf", 96.0, np.nan, np.nan, method="mae"),
            condition_rows("compound_gene_matching", "compound", 48.0, "crispr", 144.0, method="dino"),
            condition_rows("compound_gene_matching", "compound", 48.0, "orf", 96.0, method="dino"),
        ]
    )
    reference = compare.paper_reference(results, paper)
    table = reference.set_index(compare.task_label(reference))
    assert len(table) == 3
    assert table.loc["replicate_retrieval / orf", ["paper_same_condition", "paper_min", "paper_max"]].tolist() == [
        0.2,
        0.2,
        0.4,
    ]
    assert table.loc["compound_gene_matching / compound–crispr", "paper_same_condition"] == 0.03
    assert table.loc["compound_gene_matching / compound–crispr", "paper_min"] == 0.01
    assert table.loc["compound_gene_matching / compound–orf"].drop(compare.TASK_COLUMNS).isna().all()


def test_verdicts_use_benjamini_hochberg_by_hand():
    # BH by hand for p = 0.01, 0.04, 0.03, 0.5 (m = 4): sorted 0.01*4/1 = 0.04; 0.03*4/2 = 0.06; 0.04*4/3 = 0.0533 -> 0.0533
    # (min over larger ranks: 0.06 -> min(0.06, 0.0533) = 0.0533); 0.5*4/4 = 0.5
    paired = pd.DataFrame(
        {"wilcoxon_p_value": [0.01, 0.04, 0.03, 0.5], "mean_difference": [0.2, -0.1, -0.3, 0.4], "n": 10}
    )
    judged = compare.with_verdicts(paired)
    np.testing.assert_allclose(judged["corrected_p_value"], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert judged["verdict"].tolist() == [
        "a better",
        "no significant difference",
        "no significant difference",
        "no significant difference",
    ]
    assert compare.with_verdicts(paired, significance=0.06)["verdict"].tolist()[:3] == [
        "a better",
        "b better",
        "b better",
    ]
    missing = compare.with_verdicts(pd.DataFrame({"wilcoxon_p_value": [np.nan], "mean_difference": [1.0], "n": 10}))
    assert missing["corrected_p_value"].item() == 1.0 and missing["verdict"].item() == "no significant difference"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.9, 0.5, 0.1], True),
        ([0.5, 0.5, 0.1], True),
        ([0.5, 0.5, 0.5], False),
        ([0.0, 0.0, 0.0], False),
        ([0.1, 0.5, 0.0], False),
        ([0.9, np.nan, 0.1], "not testable"),
    ],
)
def test_ordered_chains(values, expected):
    assert compare.ordered(pd.Series(values)) == expected


def test_task_and_modality_order_per_method():
    rows = []
    for method, (replicate, sister, gene) in {"good": (1.0, 0.0, 0.0), "flat": (0.0, 0.0, 0.0)}.items():
        for modality, retrieved in (("compound", replicate), ("crispr", replicate), ("orf", 0.0)):
            rows.append(
                {
                    "method": method,
                    "task": "replicate_retrieval",
                    "Metadata_modality": modality,
                    "retrieved": bool(retrieved),
                    "mean_average_precision": retrieved,
                }
            )
        rows += [
            {
                "method": method,
                "task": task,
                "Metadata_modality": "compound",
                "retrieved": bool(value),
                "mean_average_precision": value,
            }
            for task, value in (("sister_matching", sister), ("compound_gene_matching", gene))
        ]
    results = pd.DataFrame(rows).assign(
        Metadata_cell_type="U2OS", Metadata_timepoint=48, n_profiles=2, perturbations=lambda t: t.index.astype(str)
    )
    order = compare.task_and_modality_order(results)
    assert order.loc["good", "tasks harder along the chain"] == True  # noqa: E712 (numpy's bool)
    assert order.loc["good", "compound ≥ CRISPR ≥ ORF"] == True  # noqa: E712
    assert order.loc["flat", "tasks harder along the chain"] == False  # noqa: E712
    assert order.loc["good", "replicate_retrieval"] == pytest.approx(2 / 3)


def test_three_tests_score_the_same_profiles_and_reuse_the_study_results():
    settings = retrieval.MapSettings(null_size=1000)
    profiles = {"a": compound_screen(0)}
    results = retrieval.run_tasks(profiles["a"], settings).assign(method="a")
    by_test = compare.by_significance_test(profiles, results, settings)
    assert set(by_test["test"]) == {"study", "paper", "copairs"}
    for test in ("study", "paper"):
        scored = retrieval.run_tasks(profiles["a"], retrieval.MapSettings(null_size=1000, method=test))
        expected = retrieval.fraction_retrieved(scored, by=compare.TASK_COLUMNS)
        expected = expected[expected["n"] > 0]
        np.testing.assert_array_equal(
            by_test.loc[by_test["test"] == test, "fraction_retrieved"], expected["fraction_retrieved"]
        )
    table = compare.significance_table(by_test, {"a": "A"})
    first = by_test[(by_test["test"] == "paper") & (by_test["task"] == "replicate_retrieval")].iloc[0]
    assert table.loc[("A", "replicate_retrieval / compound"), "paper"] == (
        f"{first['fraction_retrieved']:.2f} ({first['n']}/{first['n_sets']})"
    )


def test_methods_are_compared_on_the_same_matching_units():
    settings = retrieval.MapSettings(null_size=500)
    profiles = {"a": compound_screen(1), "b": compound_screen(2)}
    results = pd.concat([retrieval.run_tasks(t, settings).assign(method=m) for m, t in profiles.items()])
    same = compare.on_the_same_units(profiles, results, settings)
    units = {
        method: set(
            map(tuple, part[part["task"] != "replicate_retrieval"][["task", "Metadata_matching_target"]].values)
        )
        for method, part in retrieval.tested(same).groupby("method")
    }
    assert units["a"] == units["b"] and units["a"]  # every perturbation, whatever each method found replicable
    replicates = same[same["task"] == "replicate_retrieval"].reset_index(drop=True)
    expected = results[results["task"] == "replicate_retrieval"].reset_index(drop=True)
    pd.testing.assert_frame_equal(replicates[expected.columns], expected, check_dtype=False)
