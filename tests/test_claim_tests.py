"""Tests for cellstudy.applications.claim_tests: each claim's tests on small tables whose verdicts are known."""

import numpy as np
import pandas as pd
import pytest

from cellstudy.applications import claim_tests as ct
from cellstudy.applications import claims

LABELS = {"dino": "DINO", "mae": "MAE", "classical": "classical"}


def test_oracle_room_reads_the_oracles_lower_bound_and_allows_all_without_oracle():
    summary = pd.DataFrame(
        {"method": ["oracle", "oracle", "dino"], "row": ["r1", "r2", "r1"], "fraction_low": [0.2, 0.0, 0.5]}
    )
    room = ct.oracle_room(summary)
    assert (room("r1"), room("r2"), room("unknown")) == (True, False, False)
    assert ct.oracle_room(summary[summary["method"] != "oracle"])("r2") is True


def test_c2_compares_the_claimed_ratio_with_newcombes_interval_by_hand():
    sweep = pd.DataFrame(
        {
            "task": "replicate_retrieval",
            "row": "replicate / compound",
            "n": 100,
            "n_sets": 100,
            "mask_ratio": [0.5, 0.75, 0.9],
            "fraction_retrieved": [0.2, 0.6, 0.55],
        }
    )
    rows = pd.DataFrame(ct.c2_tests(sweep, lambda row: True, "simulated screen"))
    assert rows["test"].tolist() == ["replicate / compound: mask 0.75 − 0.5", "replicate / compound: mask 0.75 − 0.9"]
    np.testing.assert_allclose(rows["estimate"], [0.4, 0.05])
    # Newcombe's hybrid score interval for 60/100 - 20/100: Wilson bounds of each proportion combined
    z = 1.959963984540054

    def wilson(k, n):
        p, centre = k / n, (k + z * z / 2) / (n + z * z)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    (l1, u1), (l2, u2) = wilson(60, 100), wilson(20, 100)
    low = 0.4 - np.sqrt((0.6 - l1) ** 2 + (u2 - 0.2) ** 2)
    high = 0.4 + np.sqrt((u1 - 0.6) ** 2 + (0.2 - l2) ** 2)
    assert rows.loc[0, "low"] == pytest.approx(low) and rows.loc[0, "high"] == pytest.approx(high)
    assert rows["verdict"].tolist() == [claims.SUPPORTED, claims.INCONCLUSIVE]
    untestable = ct.c2_tests(sweep, lambda row: False, "")
    assert {row["verdict"] for row in untestable} == {claims.NOT_TESTABLE}
    missing = ct.c2_tests(sweep[sweep["mask_ratio"] != 0.75], lambda row: True, "")
    assert [row["verdict"] for row in missing] == [claims.NOT_TESTABLE]


def test_c4_turns_written_orderings_into_observations():
    order = pd.DataFrame(
        {"tasks harder along the chain": ["True", "False"], "compound ≥ CRISPR ≥ ORF": ["not testable", "True"]},
        index=["DINO", "MAE"],
    )
    verdicts = [row["verdict"] for row in ct.c4_tests(order, "")]
    assert verdicts == [claims.SUPPORTED, claims.NOT_SUPPORTED, claims.NOT_TESTABLE, claims.SUPPORTED]


def test_c6_rank_gain_is_a_share_of_the_genes_and_needs_room_under_the_ceiling():
    ranks = pd.DataFrame(
        {
            "method": "dino",
            "Metadata_genetic_modality": "crispr",
            "n_genes": 10,
            "chance_rank": 5.5,
            "annotated_rank": [1.0, 2.0, 1.0, 3.0, 2.0],
            "driven_by_unannotated_gene": [False, False, False, True, False],
        }
    )
    assert ct.rank_gains(ranks)["rank_gain"].tolist() == pytest.approx([0.45, 0.35, 0.45, 0.25, 0.35])
    rows = ct.c6_tests(ranks, LABELS, "")
    assert rows[0]["estimate"] == pytest.approx(0.37) and rows[0]["verdict"] == claims.SUPPORTED
    too_few = ct.c6_tests(ranks.head(4), LABELS, "")  # four genes: fewer than a handful
    assert too_few[0]["verdict"] == claims.INCONCLUSIVE
    assert rows[1]["test"].endswith("(1 driven by an unannotated gene)")
    flat_ceiling = pd.concat([ranks, ranks.assign(method="planted", annotated_rank=5.5)], ignore_index=True)
    assert {row["verdict"] for row in ct.c6_tests(flat_ceiling, LABELS, "")} == {claims.NOT_TESTABLE}


def test_claims_summary_combines_each_claims_tests():
    detail = pd.DataFrame(
        [
            ct.test_row(claim, "t", verdict)
            for claim, verdict in [("C1", claims.SUPPORTED), ("C1", claims.SUPPORTED), ("C2", claims.INCONCLUSIVE)]
        ]
    )
    table = ct.claims_summary(detail, real_screen=False, data="simulated screen").set_index(pd.Index(list(ct.CLAIMS)))
    assert table.loc["C1", "verdict"] == claims.combine_verdicts([claims.SUPPORTED] * 2)
    assert table.loc["C1", "evidence"] == "2 supported (of 2 tests)"
    assert table.loc["C3", "evidence"] == " (of 0 tests)"
    assert table.loc["C6", "caveat"] == ct.SIMULATED_CAVEATS["C6"]
    assert ct.claims_summary(detail, True, "CPJUMP1 screen").loc[5, "caveat"] == ct.REAL_CAVEATS["C6"]


def test_interval_text_and_verdict_counts():
    assert ct.interval_text(0.1234, 0.05, 0.2) == "+0.123 [+0.050, +0.200]"
    assert ct.interval_text(0.1, np.nan, np.nan) == "+0.100" and ct.interval_text(np.nan, np.nan, np.nan) == ""
    detail = pd.DataFrame(
        [ct.test_row("C2", f"t{i}", v) for i, v in enumerate([claims.SUPPORTED, claims.SUPPORTED, claims.NOT_TESTABLE])]
    )
    counts = ct.verdict_counts(detail)
    assert list(counts.index) == list(ct.CLAIMS) and list(counts.columns) == list(claims.VERDICTS)
    assert counts.loc["C2"].tolist() == [2, 0, 0, 1] and counts.loc["C1"].sum() == 0
    assert (
        ct.readable(detail.assign(estimate=0.5, low=0.1, high=0.9))["estimate [95% interval]"].iloc[0]
        == "+0.500 [+0.100, +0.900]"
    )


def test_real_wells_check_is_its_own_row_labelled_as_real_and_not_testable_without_results():
    from cellstudy.evaluation import real_wells

    rows = [
        {"task": "replicate_retrieval", "Metadata_cell_type": "U2OS", "Metadata_modality": "compound"}
        | {"Metadata_timepoint": 48, "Metadata_broad_sample": f"s{i}", "n_profiles": 4, "test": "study"}
        | {
            "method": method,
            "retrieved": method == "final" and i < 6,
            "mean_average_precision": 0.5 if method == "final" else 0.1,
        }
        for i in range(10)
        for method in ("final", "shuffled")
    ]
    detail = pd.DataFrame(ct.real_wells_tests(pd.DataFrame(rows)))
    assert detail["verdict"].tolist() == ["supported", "supported"]
    assert set(detail["data"]) == {real_wells.DATA_LABEL}
    assert detail["estimate"].tolist() == pytest.approx([0.6, 0.4])
    summary = ct.real_wells_summary(detail)
    assert summary["claim"].str.startswith("R1").all() and summary["data"].tolist() == [real_wells.DATA_LABEL]
    empty = pd.DataFrame(ct.real_wells_tests(pd.DataFrame(columns=["task", "method", "test"])))
    assert (empty["verdict"] == "not testable here").all()
    assert "R1" not in ct.verdict_counts(detail).index  # the verdict figure shows the screen's claims only
