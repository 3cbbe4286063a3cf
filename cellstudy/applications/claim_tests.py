"""The claims of the study, each turned into tests of the result tables the notebooks wrote.

One function per claim (:func:`c1_tests` ... :func:`c6_tests`) reads the tables that answer it and returns one
row per test: ``claim``, ``test``, ``verdict`` (by the rules of :mod:`cellstudy.applications.claims`),
``measure``, ``estimate``, ``low``, ``high``, ``data`` and ``source`` (the notebook whose table it read).
:func:`claims_summary` combines each claim's tests into its verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import confint_proportions_2indep

from cellstudy.applications import claims
from cellstudy.columns import COMPOUND_GENE_MATCHING, GENETIC_MODALITY, REPLICATE_RETRIEVAL, TASK
from cellstudy.evaluation import real_wells
from cellstudy.evaluation.significance import STUDY
from cellstudy.stats import MIN_INDEPENDENT_UNITS

CLAIMS = {
    "C1": "Self-supervised pre-training means far fewer labels are needed downstream",
    "C2": "Masking 75% of the patches is a good ratio for MAE",
    "C3": "DINO embeddings beat masked prediction and classical features on retrieval",
    "C4": "Retrieval gets harder from replicates to sisters to compound–gene pairs; compounds strongest, ORFs weakest",
    "C5": "CRISPR knockout and ORF over-expression of the same gene are slightly positively correlated",
    "C6": "A compound's profile proposes its target; polypharmacology blurs the match",
}
"""The six claims the study tests (the claims table of the book's introduction)."""
SIMULATED_CAVEATS = {
    "C1": "Small CPU encoders pre-trained for minutes; few seeds and short fine-tuning; the simulated labels "
    "(target genes) include many genes without a visible phenotype.",
    "C2": "One short training run per ratio; fractions compared as independent proportions; mAP per ratio "
    "is in notebook 7.",
    "C3": "Tasks where the oracle retrieves nothing are not testable; methods differ on a screen designed to "
    "match the paper's classical numbers, not on real images.",
    "C4": "The simulator was calibrated so that the classical features reproduce the paper's fractions "
    "retrieved, so for them the ordering holds partly by construction.",
    "C5": "The simulator plants this correlation: finding it shows that a method recovers planted structure, "
    "not a biological fact.",
    "C6": "Targets ranked among the screen's simulated genes only; the gene → compound query is shown in "
    "notebook 7 but not scored; polypharmacology is the simulator's unannotated driver gene.",
}
"""What limits each claim's evidence on the simulated screen."""
REAL_CAVEATS = {
    "C1": "Label efficiency on the downloaded plates only; few seeds and short fine-tuning.",
    "C2": "One training run per ratio; fractions compared as independent proportions.",
    "C3": "No oracle: a task where no method retrieves anything still counts as testable.",
    "C4": "Only the downloaded plates (one cell type, one time point per modality).",
    "C5": "Genes of the downloaded plates only.",
    "C6": "Targets ranked by annotation only; polypharmacology cannot be identified on a real screen.",
}
"""What limits each claim's evidence on the real plates (the simulation's caveats do not apply there)."""
REAL_WELLS_CHECKS = {
    "R1": "Real-data check: on real CPJUMP1 wells, phenotype probabilities retrieve replicates better than the "
    "same model trained on shuffled labels (the null)",
}
"""Checks of the evaluation on real wells (:mod:`cellstudy.evaluation.real_wells`), reported beside the claims
as rows of their own, labelled with their data, never mixed with the simulated screen's verdicts."""
REAL_WELLS_CAVEAT = (
    "15 phenotype probabilities from nuclear shape, not the paper's ~900 CellProfiler features; a near-null "
    "result is expected and shows that the evaluation does not invent hits."
)
"""What limits the real-wells check."""
LOW_LABEL_FRACTION = 0.25
"""The label fractions where "fewer labels" is tested (C1)."""
CLAIMED_MASK_RATIO = 0.75
"""He et al.'s mask ratio (C2)."""
CHAINS = ("tasks harder along the chain", "compound ≥ CRISPR ≥ ORF")
"""The orderings of claim C4 (columns of :func:`cellstudy.evaluation.compare.task_and_modality_order`)."""
OBSERVED = {"True": True, "False": False, "not testable": None}
"""An ordering as written in its CSV -> whether it holds (``None``: not testable)."""


def test_row(
    claim: str,
    test: str,
    verdict: str,
    estimate: float = np.nan,
    low: float = np.nan,
    high: float = np.nan,
    measure: str = "",
    source: str = "",
    data: str = "",
) -> dict:
    """One test of a claim, in the columns of the claim-tests table."""
    return {
        "claim": claim,
        "test": test,
        "verdict": verdict,
        "measure": measure,
        "estimate": estimate,
        "low": low,
        "high": high,
        "data": data,
        "source": source,
    }


def oracle_room(summary: pd.DataFrame) -> Callable[[str], bool]:
    """Whether the oracle leaves room on a task × modality ``row`` of notebook 6's summary
    (:func:`cellstudy.applications.claims.can_separate` of its fraction retrieved's lower bound); every row
    when there is no oracle.
    """
    oracle = summary[summary["method"] == "oracle"].set_index("row")
    room = oracle["fraction_low"].map(claims.can_separate)
    return lambda row: bool(room.get(row, False)) if not oracle.empty else True


def c1_tests(
    knn: Iterable[tuple[str, str, pd.Series]], label_efficiency: pd.DataFrame, labels: Mapping[str, str], data: str
) -> list[dict]:
    """C1: the kNN checks ``(notebook, method, difference row)`` of pre-training, and the label-efficiency runs at
    :data:`LOW_LABEL_FRACTION` or fewer labels, pre-trained minus random init paired by seed and training set.
    """
    rows = [
        test_row(
            "C1",
            f"{labels[method]}: 1-NN accuracy, pre-trained − random init",
            claims.interval_verdict(row["mean_difference"], row["ci_low"], row["ci_high"]),
            row["mean_difference"],
            row["ci_low"],
            row["ci_high"],
            "accuracy difference",
            notebook,
            data,
        )
        for notebook, method, row in knn
    ]
    low = label_efficiency[label_efficiency["label_fraction"] <= LOW_LABEL_FRACTION].drop_duplicates(
        ["encoder", "regime", "method", "seed", "n_train_wells"]
    )
    paired = low.pivot_table(index=["encoder", "regime", "seed", "n_train_wells"], columns="method", values="accuracy")
    for (encoder, regime), part in paired.groupby(level=["encoder", "regime"], sort=False):
        estimate, lower, upper = claims.mean_interval(part["pre-trained"] - part["random init"])
        rows.append(
            test_row(
                "C1",
                f"{labels[encoder]}, {regime}, ≤ {LOW_LABEL_FRACTION:.0%} of labels: pre-trained − random init "
                f"(n = {len(part)})",
                claims.interval_verdict(estimate, lower, upper),
                estimate,
                lower,
                upper,
                "accuracy difference",
                "07_applications",
                data,
            )
        )
    return rows


def c2_tests(sweep: pd.DataFrame, testable: Callable[[str], bool], data: str) -> list[dict]:
    """C2: per task × modality row of the mask-ratio sweep, the fraction retrieved at :data:`CLAIMED_MASK_RATIO`
    minus that at each other ratio, with Newcombe's interval for a difference of independent proportions (none
    when either rests on fewer than :data:`cellstudy.stats.MIN_INDEPENDENT_UNITS` perturbation sets).
    """
    sweep = sweep[sweep[TASK].isin([REPLICATE_RETRIEVAL, COMPOUND_GENE_MATCHING]) & (sweep["n"] > 0)]
    sweep = sweep.assign(retrieved=(sweep["fraction_retrieved"] * sweep["n"]).round().astype(int))
    rows = []
    for row, part in sweep.groupby("row", sort=True):
        claimed = part[np.isclose(part["mask_ratio"], CLAIMED_MASK_RATIO)]
        if claimed.empty:  # no units at the claimed ratio (e.g. nothing replicable to match)
            rows.append(
                test_row(
                    "C2",
                    f"{row}: mask {CLAIMED_MASK_RATIO:g} vs the others",
                    claims.NOT_TESTABLE,
                    measure="fraction retrieved difference",
                    source="07_applications",
                    data=data,
                )
            )
            continue
        claimed = claimed.iloc[0]
        for other in part[~np.isclose(part["mask_ratio"], CLAIMED_MASK_RATIO)].itertuples():
            estimate = claimed["fraction_retrieved"] - other.fraction_retrieved
            lower, upper = confint_proportions_2indep(
                claimed["retrieved"], claimed["n"], other.retrieved, other.n, method="newcomb", compare="diff"
            )
            if min(claimed["n_sets"], other.n_sets) < MIN_INDEPENDENT_UNITS:  # too few independent units
                lower, upper = np.nan, np.nan
            rows.append(
                test_row(
                    "C2",
                    f"{row}: mask {CLAIMED_MASK_RATIO:g} − {other.mask_ratio:g}",
                    claims.interval_verdict(estimate, lower, upper, testable=testable(row)),
                    estimate,
                    lower,
                    upper,
                    "fraction retrieved difference",
                    "07_applications",
                    data,
                )
            )
    return rows


def c3_tests(paired: pd.DataFrame, labels: Mapping[str, str], testable: Callable[[str], bool], data: str) -> list[dict]:
    """C3: DINO minus MAE and minus the classical features, per task × modality row, from the paired comparisons."""
    chosen = paired[paired["a"].eq("dino") & paired["b"].isin(["mae", "classical"])]
    return [
        test_row(
            "C3",
            f"{labels[row.a]} − {labels[row.b]}, {row.row} ({row.n} perturbation sets)",
            claims.interval_verdict(row.mean_difference, row.ci_low, row.ci_high, testable=testable(row.row)),
            row.mean_difference,
            row.ci_low,
            row.ci_high,
            "mAP difference",
            "06_evaluation",
            data,
        )
        for row in chosen.itertuples()
    ]


def c4_tests(order: pd.DataFrame, data: str) -> list[dict]:
    """C4: per method (the index), whether each chain of :data:`CHAINS` holds: an observation, yes or no."""
    return [
        test_row(
            "C4",
            f"{chain}: {method}",
            claims.outcome_verdict(OBSERVED[holds]),
            measure="ordering holds",
            source="06_evaluation",
            data=data,
        )
        for chain in CHAINS
        for method, holds in order[chain].astype(str).items()
    ]


def c5_tests(c5: pd.DataFrame, labels: Mapping[str, str], data: str) -> list[dict]:
    """C5: per method, matched minus unmatched CRISPR–ORF cosine with its one-sided permutation p-value."""
    return [
        test_row(
            "C5",
            f"{labels[row.method]}: matched − unmatched cosine ({row.n_genes} genes, p = {row.p_value:.3g})",
            claims.p_value_verdict(row.p_value),
            row.mean_matched - row.mean_unmatched,
            measure="cosine difference",
            source="06_evaluation",
            data=data,
        )
        for row in c5.itertuples()
    ]


def rank_gains(ranks: pd.DataFrame) -> pd.DataFrame:
    """Target ranks with ``rank_gain``: how far above chance the annotated target ranks, as a share of the genes."""
    return ranks.assign(rank_gain=(ranks["chance_rank"] - ranks["annotated_rank"]) / ranks["n_genes"])


def planted_ceiling(ranks: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Per genetic modality, the planted noise-free ceiling's mean rank gain with its interval (none on a real screen)."""
    planted = rank_gains(ranks[ranks["method"] == "planted"])
    return {modality: claims.mean_interval(part["rank_gain"]) for modality, part in planted.groupby(GENETIC_MODALITY)}


def c6_tests(ranks: pd.DataFrame, labels: Mapping[str, str], data: str) -> list[dict]:
    """C6: per method and genetic modality, the annotated target's rank gain over chance, and how much less it is for
    compounds driven by an unannotated gene; not testable where the planted ceiling leaves no room.
    """
    ceiling = planted_ceiling(ranks)
    rows = []
    measured = rank_gains(ranks[ranks["method"] != "planted"])
    for (method, modality), part in measured.groupby(["method", GENETIC_MODALITY], sort=False):
        room_here = claims.can_separate(ceiling.get(modality, (np.nan, np.nan, np.nan))[1]) if ceiling else True
        estimate, lower, upper = claims.mean_interval(part["rank_gain"])
        rows.append(
            test_row(
                "C6",
                f"{labels[method]}: target rank vs chance, {modality.upper()} ({len(part)} compounds)",
                claims.interval_verdict(estimate, lower, upper, testable=room_here),
                estimate,
                lower,
                upper,
                "rank gain over chance",
                "07_applications",
                data,
            )
        )
        driven = part["driven_by_unannotated_gene"].astype(bool)
        estimate, lower, upper = claims.difference_interval(
            part.loc[~driven, "rank_gain"], part.loc[driven, "rank_gain"]
        )
        rows.append(
            test_row(
                "C6",
                f"{labels[method]}: polypharmacology blurs the match, {modality.upper()} "
                f"({driven.sum()} driven by an unannotated gene)",
                claims.interval_verdict(estimate, lower, upper, testable=room_here and driven.any()),
                estimate,
                lower,
                upper,
                "rank gain difference",
                "07_applications",
                data,
            )
        )
    return rows


def real_wells_tests(per_unit: pd.DataFrame) -> list[dict]:
    """R1: replicate retrieval on the real wells (notebook 6's per-unit results, study test), pooled over every
    condition: phenotype probabilities minus the shuffled-label null, in fraction retrieved and in mAP, each
    with a paired bootstrap interval over perturbations (:func:`cellstudy.evaluation.real_wells.replicate_difference`);
    *not testable here* without results (the real wells were not available).
    """
    study_test = per_unit[per_unit["test"] == STUDY] if "test" in per_unit else per_unit.iloc[0:0]
    differences = real_wells.replicate_difference(study_test) if len(study_test) else {}
    rows = []
    for metric in ("fraction_retrieved", "mAP"):
        estimate, low, high = differences.get(metric, (np.nan, np.nan, np.nan))
        rows.append(
            test_row(
                "R1",
                f"replicate retrieval, {metric}: {real_wells.FEATURE_SETS[real_wells.FINAL]} − "
                f"{real_wells.FEATURE_SETS[real_wells.SHUFFLED]}",
                claims.interval_verdict(estimate, low, high),
                estimate,
                low,
                high,
                f"difference in {metric} (paired over perturbations)",
                "06_evaluation",
                real_wells.DATA_LABEL,
            )
        )
    return rows


def real_wells_summary(detail: pd.DataFrame) -> pd.DataFrame:
    """The rows of :data:`REAL_WELLS_CHECKS` for the claims table, in its columns, labelled with their data."""
    return pd.DataFrame(
        [
            {
                "claim": f"{check}: {text}",
                "verdict": claims.combine_verdicts(detail.loc[detail["claim"] == check, "verdict"]),
                "evidence": evidence(detail.loc[detail["claim"] == check, "verdict"]),
                "data": real_wells.DATA_LABEL,
                "caveat": REAL_WELLS_CAVEAT,
            }
            for check, text in REAL_WELLS_CHECKS.items()
        ]
    )


def evidence(verdicts: pd.Series) -> str:
    """How many of a claim's tests reached each verdict: ``2 supported, 1 inconclusive (of 3 tests)``."""
    counts = verdicts.value_counts()
    return ", ".join(f"{counts[v]} {v}" for v in claims.VERDICTS if v in counts) + f" (of {len(verdicts)} tests)"


def claims_summary(detail: pd.DataFrame, real_screen: bool, data: str) -> pd.DataFrame:
    """One row per claim of :data:`CLAIMS`: its verdict (:func:`cellstudy.applications.claims.combine_verdicts`),
    the evidence and the caveat of the screen (:data:`REAL_CAVEATS` or :data:`SIMULATED_CAVEATS`).
    """
    caveats = REAL_CAVEATS if real_screen else SIMULATED_CAVEATS
    return pd.DataFrame(
        [
            {
                "claim": f"{claim}: {text}",
                "verdict": claims.combine_verdicts(detail.loc[detail["claim"] == claim, "verdict"]),
                "evidence": evidence(detail.loc[detail["claim"] == claim, "verdict"]),
                "data": data,
                "caveat": caveats[claim],
            }
            for claim, text in CLAIMS.items()
        ]
    )


def interval_text(estimate: float, low: float, high: float) -> str:
    """``+0.123 [+0.045, +0.201]``; the estimate alone without an interval, empty without an estimate."""
    if pd.isna(estimate):
        return ""
    bounds = "" if pd.isna(low) else f" [{low:+.3f}, {high:+.3f}]"
    return f"{estimate:+.3f}{bounds}"


def readable(detail: pd.DataFrame) -> pd.DataFrame:
    """The claim tests for reading: each estimate with its interval in one column."""
    text = [interval_text(*values) for values in detail[["estimate", "low", "high"]].to_numpy()]
    return detail.assign(**{"estimate [95% interval]": text})[
        ["claim", "test", "measure", "estimate [95% interval]", "verdict", "data", "source"]
    ]


def verdict_counts(detail: pd.DataFrame) -> pd.DataFrame:
    """Tests per claim (rows, in :data:`CLAIMS` order) and verdict (columns, from the strongest)."""
    return detail.pivot_table(index="claim", columns="verdict", values="test", aggfunc="count", fill_value=0).reindex(
        index=list(CLAIMS), columns=list(claims.VERDICTS), fill_value=0
    )
