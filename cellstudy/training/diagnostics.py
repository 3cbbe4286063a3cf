"""Reading a DINO run's log for collapse: the rule that turns its last steps into a verdict.

DINO can collapse two ways: to one dimension (every image the same output) or to uniform output
(centring outweighs sharpening). The training log records the teacher's entropy, its KL divergence to
the uniform distribution and the spread of the embeddings at every step (:mod:`cellstudy.models.dino`).
"""

from __future__ import annotations

import pandas as pd

COLLAPSED = "the run collapsed at some steps (see the warnings in the training log)"
UNIFORM = (
    "the teacher's output has lost most of its sharpness: a partial collapse of the 'uniform' kind, "
    "where centring outweighs sharpening"
)
DRIFTING = (
    "the teacher's output drifts towards uniform in the second half of the run but stays well clear "
    "of it, and images keep distinct embeddings: no collapse, but no sharpening either"
)
HEALTHY = "the teacher's outputs stay far from uniform and differ between images: no sign of collapse"
LOST_MOST, LOST_SOME = 0.5, 0.75
"""Shares of its highest KL to uniform below which the teacher's output counts as mostly / partly flattened."""


def smoothed_run(metrics: pd.DataFrame, columns: list[str], window: int) -> pd.DataFrame:
    """Rolling means over ``window`` steps of ``columns`` of a training log (one row per step, column ``step``)."""
    return metrics.set_index("step")[columns].rolling(window, min_periods=1).mean()


def warned_steps(warnings: pd.Series) -> int:
    """Steps whose log entry carries a collapse warning."""
    return int(sum(map(bool, warnings)))


def collapse_verdict(n_warned: int, final_kl: float, peak_kl: float) -> str:
    """:data:`COLLAPSED` if any step warned; else by how much of its highest smoothed KL to uniform the teacher
    kept at the end: below :data:`LOST_MOST` :data:`UNIFORM`, below :data:`LOST_SOME` :data:`DRIFTING`, else
    :data:`HEALTHY`.
    """
    if n_warned:
        return COLLAPSED
    if final_kl < LOST_MOST * peak_kl:
        return UNIFORM
    if final_kl < LOST_SOME * peak_kl:
        return DRIFTING
    return HEALTHY
