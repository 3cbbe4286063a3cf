"""Tests for cellstudy.evaluation.stability: the table changes by hand, the seed spread against rescoring
each seed directly, and the moves against the spread they are compared with."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from screens import compound_screen

from cellstudy.evaluation import retrieval, stability
from cellstudy.evaluation.retrieval import MapSettings

SETTINGS = MapSettings(null_size=2000)


def test_one_more_control_is_a_copy_of_a_control_of_its_plate_or_of_another_plate():
    profiles = compound_screen(0, n_negcon=30, n_features=6)
    controls = profiles[(profiles["Metadata_Plate"] == "P0") & profiles["Metadata_negcon"]]
    duplicated = stability.with_one_more_control(profiles, "duplicated control")
    added = stability.with_one_more_control(profiles, "added control")
    assert len(duplicated) == len(added) == len(profiles) + 1
    extra = duplicated.iloc[-1]
    assert extra["Metadata_Well"] == controls.iloc[0]["Metadata_Well"] + "+" and extra["Metadata_negcon"]
    np.testing.assert_array_equal(extra[[f"f{i}" for i in range(6)]], controls.iloc[0][[f"f{i}" for i in range(6)]])
    other = profiles[(profiles["Metadata_Plate"] != "P0") & profiles["Metadata_negcon"]].iloc[0]
    assert added.iloc[-1]["Metadata_Plate"] == "P0" and added.iloc[-1]["Metadata_Well"] == other["Metadata_Well"] + "+"
    np.testing.assert_array_equal(added.iloc[-1][[f"f{i}" for i in range(6)]], other[[f"f{i}" for i in range(6)]])
    with pytest.raises(ValueError, match="change must be"):
        stability.with_one_more_control(profiles, "removed control")
    with pytest.raises(ValueError, match="no other plate of the condition of plate P0"):
        stability.with_one_more_control(profiles[profiles["Metadata_Plate"] == "P0"], "added control")


def test_an_added_control_of_robustized_profiles_is_not_at_the_origin():
    """A well at the median of controls robustized to those controls would be all zero (and unscorable)."""
    profiles = compound_screen(2, n_negcon=4, n_features=6)
    features = [f"f{i}" for i in range(6)]
    controls = profiles[profiles["Metadata_negcon"]]
    medians = controls.groupby("Metadata_Plate")[features].transform("median")
    profiles.loc[controls.index, features] = controls[features] - medians  # each plate's control median is 0
    added = stability.with_one_more_control(profiles, "added control").iloc[-1]
    assert np.abs(added[features].to_numpy(dtype=float)).sum() > 0


def test_seed_spread_is_each_seed_scored_on_its_own():
    profiles = compound_screen(1, n_negcon=30, n_features=6)
    queries = retrieval.queries_on_every_perturbation(profiles, SETTINGS)
    per_seed = stability.seed_spread(queries, SETTINGS, n_seeds=3)
    for seed in range(3):
        direct = retrieval.fraction_retrieved(retrieval.score_every(queries, replace(SETTINGS, seed=seed)))
        direct = direct[direct["n"] > 0]
        ours = per_seed[per_seed["seed"] == seed]
        np.testing.assert_array_equal(ours["fraction_retrieved"], direct["fraction_retrieved"])
    summary = stability.spread_summary(per_seed)
    grouped = per_seed.groupby("task")["fraction_retrieved"]
    np.testing.assert_allclose(summary.set_index("task")["spread"], grouped.max() - grouped.min())
    assert (summary["seeds"] == 3).all()


def test_moves_are_measured_from_the_table_as_measured_and_judged_by_the_spread():
    shift = pd.DataFrame(
        {
            "task": "replicate_retrieval",
            "Metadata_modality": ["compound", "compound", "compound", "orf", "orf"],
            "table": ["as measured", "duplicated control", "added control", "as measured", "added control"],
            "fraction_retrieved": [0.50, 0.52, 0.50, 0.30, 0.40],
        }
    )
    summary = pd.DataFrame(
        {"task": "replicate_retrieval", "Metadata_modality": ["compound", "orf"], "spread": [0.03, 0.05]}
    )
    moves = stability.within_spread(shift, summary)
    assert moves["move"].tolist() == pytest.approx([0.02, 0.0, 0.1])
    assert moves["within_spread"].tolist() == [True, True, False]


def test_control_well_shift_scores_replicate_retrieval_on_each_table():
    shift = stability.control_well_shift(compound_screen(2, n_negcon=30, n_features=6), SETTINGS)
    assert sorted(shift["table"]) == sorted(["as measured", *stability.CONTROL_CHANGES])
    assert (shift["task"] == "replicate_retrieval").all() and (shift["n"] == 8).all()
