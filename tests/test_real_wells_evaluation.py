"""Tests for cellstudy.evaluation.real_wells on small tables in the layout of the real wells, with planted replicate
signal: found in the phenotype probabilities, not in the shuffled-label null; the cell count ranked by distance, its
AP equal to scikit-learn's; the labels; bad input refused by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from screens import compound_screen
from sklearn.metrics import average_precision_score

from cellstudy.data import real_wells as data
from cellstudy.data.published import TIME_POINTS
from cellstudy.evaluation import real_wells, retrieval
from cellstudy.evaluation.retrieval import MapSettings
from cellstudy.study import Study

SETTINGS = [MapSettings(null_size=2000), MapSettings(null_size=2000, method="paper")]
PLANTED = ("s0", "s1", "s2", "s3")


def real_like(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final and shuffled real wells of one compound condition: 4 plates, 10 compounds, 16 controls each.

    Final: compounds s0-s3 move two phenotypes each (medians of probabilities, so small values); shuffled: noise
    only. Cell counts (integers, so ties occur): s0 and s1 lose most cells.
    """
    screen = compound_screen(seed, n_plates=4, n_samples=10, n_negcon=16, n_features=2)
    metadata = screen.drop(columns=["f0", "f1"]).assign(Metadata_pert_type="trt")
    rng = np.random.default_rng(seed)
    names = data.feature_names()
    final = rng.uniform(0.02, 0.06, size=(len(screen), len(names)))
    shuffled = rng.uniform(0.02, 0.06, size=(len(screen), len(names)))
    samples = screen["Metadata_broad_sample"].to_numpy()
    for i, sample in enumerate(PLANTED):
        final[samples == sample, 2 * i : 2 * i + 2] += 0.2
    cells = rng.integers(480, 520, size=len(screen))
    cells[np.isin(samples, PLANTED[:2])] = rng.integers(90, 110, size=np.isin(samples, PLANTED[:2]).sum())
    tables = [
        pd.concat([metadata.assign(Metadata_Count_Cells=cells), pd.DataFrame(values, columns=names)], axis=1)
        for values in (final, shuffled)
    ]
    return tables[0], tables[1]


@pytest.fixture(scope="module")
def scored() -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    sets = real_wells.feature_sets(*real_like())
    study_test, paper_test = real_wells.evaluate(sets, SETTINGS)
    return sets, study_test, paper_test


def retrieved(results: pd.DataFrame, method: str) -> set[str]:
    rows = results[(results["method"] == method) & (results["task"] == retrieval.REPLICATE_RETRIEVAL)]
    return set(rows.loc[rows["retrieved"].astype(bool), "Metadata_broad_sample"])


def test_planted_replicates_are_found_in_the_phenotypes_and_not_in_the_shuffled_null(scored):
    _, study_test, paper_test = scored
    for results in (study_test, paper_test):
        assert retrieved(results, real_wells.FINAL) == set(PLANTED)
        assert retrieved(results, real_wells.SHUFFLED) == set()
        assert retrieved(results, real_wells.CELL_COUNT_ONLY) == set(PLANTED[:2])
    assert set(study_test["test"]) == {"study"} and set(paper_test["test"]) == {"paper"}
    difference = real_wells.replicate_difference(study_test)
    estimate, low, high = difference["fraction_retrieved"]
    assert estimate == pytest.approx(4 / 10) and low > 0


def test_the_cell_count_is_ranked_by_distance_as_scikit_learn_ranks_it(scored):
    sets, _, _ = scored
    wells = sets[real_wells.CELL_COUNT_ONLY]
    assert real_wells.SIMILARITY[real_wells.CELL_COUNT_ONLY] == "euclidean"
    settings = real_wells.settings_for(real_wells.CELL_COUNT_ONLY, MapSettings())
    ap = retrieval.average_precisions(wells, retrieval.REPLICATE_RULE, settings)
    values = wells["Count_Cells"].to_numpy()
    sample, plate, negcon = (
        wells[c].to_numpy() for c in ("Metadata_broad_sample", "Metadata_Plate", "Metadata_negcon")
    )
    for query in np.flatnonzero(~negcon)[:12]:
        same = sample == sample[query]
        candidates = (same | (negcon & (plate == plate[query]))) & (np.arange(len(wells)) != query)
        distances = np.abs(values[candidates] - values[query])
        if len(np.unique(distances)) < len(distances):  # a tie: copairs ranks the positive first, sklearn does not
            continue
        expected = average_precision_score(same[candidates], -distances)
        assert ap["average_precision"][query] == pytest.approx(expected)


def test_every_set_is_post_processed_on_the_same_wells_and_a_well_without_phenotypes_is_dropped():
    final, shuffled = real_like()
    final.loc[3, data.feature_names()] = np.nan
    with pytest.warns(UserWarning):
        sets = real_wells.feature_sets(final, shuffled)
    wells = {name: table["Metadata_Well"].str.cat(table["Metadata_Plate"]).tolist() for name, table in sets.items()}
    assert wells[real_wells.FINAL] == wells[real_wells.SHUFFLED] == wells[real_wells.CELL_COUNT_ONLY]
    assert len(wells[real_wells.FINAL]) == len(final) - 1
    negcon = sets[real_wells.CELL_COUNT_ONLY].query("Metadata_negcon")
    assert negcon.groupby("Metadata_Plate")["Count_Cells"].median().abs().max() < 1e-9  # robustized per plate
    assert "Count_Cells" not in sets[real_wells.FINAL] and "Phenotype_Hole" not in sets[real_wells.CELL_COUNT_ONLY]


def test_tables_name_every_feature_set_and_test_and_the_paper(scored):
    _, study_test, paper_test = scored
    summary = real_wells.summary(study_test)
    tables = real_wells.metric_tables(summary)
    assert list(tables["fraction_retrieved"].columns) == list(real_wells.FEATURE_SETS.values())
    row = "replicate_retrieval / compound · U2OS · 48 h"
    assert tables["fraction_retrieved"].loc[row, "phenotype probabilities"].startswith("0.40 [")
    sisters = tables["mAP"].loc["sister_matching / compound · U2OS · 48 h"]  # s0 and s3 share G0; nothing replicable
    assert (
        sisters["phenotype probabilities"].endswith("(n 1/1)")
        and sisters["shuffled-label model (null)"] == "no units (n 0/0)"
    )
    hours = TIME_POINTS["compound"]["long"]
    paper = pd.DataFrame(
        {
            "task": [retrieval.REPLICATE_RETRIEVAL],
            "Metadata_cell_type": ["U2OS"],
            "Metadata_modality": ["compound"],
            "Metadata_timepoint": [hours],
            "Metadata_genetic_modality": [None],
            "Metadata_genetic_timepoint": pd.array([pd.NA], dtype="Int64"),
            "fraction_retrieved": [0.66],
        }
    )
    beside = real_wells.beside_the_paper(paper_test, study_test, paper)
    assert beside.loc[row, "CellProfiler, paper (paper test)"] == 0.66
    assert beside.loc[row, "phenotype probabilities (paper test)"] == pytest.approx(0.4)
    assert beside.loc[row, "shuffled-label model (null) (study test)"] == 0.0
    assert "real CPJUMP1 wells" in real_wells.DATA_LABEL


def test_bad_input_is_refused_by_name(tmp_path):
    final, shuffled = real_like()
    with pytest.raises(ValueError, match="final real wells lack column.*Metadata_Count_Cells"):
        real_wells.feature_sets(final.drop(columns="Metadata_Count_Cells"), shuffled)
    with pytest.raises(ValueError, match="shuffled real wells lack column.*Phenotype_Hole"):
        real_wells.feature_sets(final, shuffled.drop(columns="Phenotype_Hole"))
    with pytest.raises(ValueError, match="different .plate, well. pairs"):
        real_wells.feature_sets(final, shuffled.iloc[::-1])
    with pytest.raises(ValueError, match="unknown feature set 'trained'"):
        real_wells.settings_for("trained", MapSettings())
    with pytest.raises(FileNotFoundError, match="real_wells"):
        Study.create("quick", tmp_path / "build", tmp_path / "no_data").real_wells("final")


def test_the_differences_are_described_with_their_data(scored):
    _, study_test, _ = scored
    text = real_wells.describe_differences(study_test)
    assert real_wells.DATA_LABEL in text and "fraction retrieved +0.400 [" in text
