"""Tests for cellstudy.training.diagnostics: the collapse rule at and around its thresholds, smoothing against
a hand-computed rolling mean."""

import pandas as pd
import pytest

from cellstudy.training import diagnostics as dx


@pytest.mark.parametrize(
    ("warned", "final", "expected"),
    [
        (1, 10.0, dx.COLLAPSED),
        (0, 4.9, dx.UNIFORM),
        (0, 5.0, dx.DRIFTING),
        (0, 7.4, dx.DRIFTING),
        (0, 7.5, dx.HEALTHY),
        (0, 10.0, dx.HEALTHY),
    ],
)
def test_collapse_verdict_thresholds(warned, final, expected):
    assert dx.collapse_verdict(warned, final, peak_kl=10.0) == expected


def test_smoothed_run_is_a_trailing_mean_and_warnings_are_counted():
    log = pd.DataFrame({"step": [1, 2, 3, 4], "kl": [1.0, 3.0, 5.0, 7.0], "warnings": [[], ["x"], [], ["y", "z"]]})
    smoothed = dx.smoothed_run(log, ["kl"], window=2)
    assert smoothed["kl"].tolist() == [1.0, 2.0, 4.0, 6.0]
    assert dx.warned_steps(log["warnings"]) == 2
