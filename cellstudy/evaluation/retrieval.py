"""Retrieval evaluation of profiles with copairs: the CPJUMP1 paper's three tasks.

The pair rules follow the CPJUMP1 paper's copairs notebooks (jump-cellpainting/2024_Chandrasekaran_NatureMethods):

=====================  ==========================================  ===========================  ============
task                   positives                                   negatives                    similarity
=====================  ==========================================  ===========================  ============
replicate retrieval    same ``Metadata_broad_sample``              negcon wells, same plate     cosine
sister matching        a shared target (compounds: ``target_list``  no shared target            abs. cosine
                       split on ``|``; CRISPR: the gene)                                        (compounds)
compound-gene          a shared target, other modality             no shared target, other      abs. cosine
                                                                   modality
=====================  ==========================================  ===========================  ============

Each task runs per group (cell type x modality x time point; compound-gene: a
compound group against a genetic group of the same cell type), scores the
average precision (AP) of every query profile, averages it per unit (the
perturbation for replicate retrieval; the target gene for the matching tasks,
as the paper), tests each mean AP (mAP) against its permutation null
(:mod:`cellstudy.evaluation.significance`: the study's test by default, the
paper's or copairs' on request), and corrects the p-values with
Benjamini-Hochberg within the group. A unit is *retrieved* when its corrected
p-value is below the threshold; :func:`fraction_retrieved` gives their share.

Before scoring, the tables are checked: duplicate (plate, well) rows, a
non-boolean ``Metadata_negcon``, queries with positives but no negative (a
plate without negative controls would score every query AP = 1) and all-zero
or non-finite profiles are refused with an error naming them; constant feature
columns are named in a warning. A group left without any unit to test (for
example, no replicable perturbation to match) stays in the output as one row
with ``n_profiles`` 0 and is named in a warning.

Similarity: the rule's cosine (or absolute cosine) by default. ``MapSettings(similarity="euclidean")`` ranks by
minus the Euclidean distance instead (the absolute-cosine rules by minus ``min(|x - y|, |x + y|)``, blind to the
sign as the absolute cosine is): for a profile of one feature, whose cosine with any other is only the product of
the signs (±1), so that nearly every pair ties and copairs' tie order decides the AP.

Ties: copairs ranks a positive whose similarity equals a negative's before it
(ties resolved optimistically); scikit-learn's ``average_precision_score``
treats tied scores as one threshold. The two agree when similarities are distinct.

Speed: copairs finds the pairs and ranks them; the similarities come from one
matrix product per group, handed to copairs through its callable-distance hook
(copairs' own per-pair computation was the bottleneck at CPJUMP1 size).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from copairs import map as copairs_map
from copairs.matching import UnpairedException
from statsmodels.stats.multitest import multipletests
from tqdm import tqdm

from cellstudy.columns import (
    CELL_TYPE,
    COMPOUND_GENE_MATCHING,
    GENE,
    GENETIC_MODALITIES,
    GENETIC_MODALITY,
    GENETIC_TIMEPOINT,
    MODALITY,
    NEGCON,
    PERT_TYPE,
    PLATE,
    REPLICATE_RETRIEVAL,
    SAMPLE,
    SISTER_MATCHING,
    SUMMARY_COLUMNS,
    TARGET_LIST,
    TARGETS,
    TIMEPOINT,
    WELL,
)
from cellstudy.data import cpjump1
from cellstudy.evaluation import significance
from cellstudy.profiling.profiles import consensus, feature_columns, metadata_columns, negcon_mask, require_columns
from cellstudy.similarity import cosine_similarity, negative_distance

SIMILARITIES = ("cosine", "euclidean")
"""How profiles are compared: the pair rule's cosine or absolute cosine, or minus the (sign-free) Euclidean distance."""
GROUP_COLUMNS = [CELL_TYPE, MODALITY, TIMEPOINT]
"""A task runs, and corrects for multiple testing, within each group of these columns."""
SCORE_COLUMNS = [*significance.SCORE_COLUMNS, "corrected_p_value", "retrieved", "perturbations"]
"""Per-unit result columns of every task."""
_ROW = "_profile_row"


@dataclass(frozen=True)
class MapSettings:
    """Significance test settings shared by the tasks.

    Parameters
    ----------
    null_size
        Draws in each Monte-Carlo permutation null (the paper: 100,000). Lower it only for quick runs: the
        smallest p-value is ``1 / (null_size + 1)``.
    threshold
        A unit is retrieved when its BH-corrected p-value is below this.
    seed
        Seed of the null distributions.
    batch_size
        Profile pairs per similarity look-up batch in copairs.
    method
        The significance test (:data:`cellstudy.evaluation.significance.METHODS`): ``"study"`` for the
        study's results; ``"paper"`` wherever a number is set beside the CPJUMP1 paper's; ``"copairs"`` to
        compare with copairs 0.5.
    similarity
        :data:`SIMILARITIES`: ``"cosine"`` (each rule's cosine or absolute cosine) for every profile of several
        features; ``"euclidean"`` (minus the Euclidean distance, sign-free where the rule takes the absolute
        cosine) for a profile of one feature.
    """

    null_size: int = 100_000
    threshold: float = 0.05
    seed: int = 0
    batch_size: int = 20_000
    method: str = significance.STUDY
    similarity: str = "cosine"

    def __post_init__(self) -> None:
        if self.method not in significance.METHODS:
            raise ValueError(f"method must be one of {significance.METHODS}, got {self.method!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")


@dataclass(frozen=True)
class PairRule:
    """A copairs pair definition: which profile pairs are positives and negatives, and how they are compared.

    Parameters
    ----------
    pos_sameby, pos_diffby
        Positive pairs share every ``pos_sameby`` value and differ in every ``pos_diffby`` value.
    neg_sameby, neg_diffby
        Negative pairs share every ``neg_sameby`` value and differ in every ``neg_diffby`` value.
    distance
        ``"cosine"``, or ``"abs_cosine"`` (absolute cosine: anti-correlation counts as similarity).
    multilabel
        A list-valued column in which "same" means "share an element" and "differ" "share none".
    """

    pos_sameby: tuple[str, ...]
    pos_diffby: tuple[str, ...]
    neg_sameby: tuple[str, ...]
    neg_diffby: tuple[str, ...]
    distance: str = "cosine"
    multilabel: str | None = None

    def __post_init__(self) -> None:
        if self.distance not in ("cosine", "abs_cosine"):
            raise ValueError(f"distance must be 'cosine' or 'abs_cosine', got {self.distance!r}")

    @property
    def columns(self) -> list[str]:
        """Every metadata column the rule reads."""
        every = (*self.pos_sameby, *self.pos_diffby, *self.neg_sameby, *self.neg_diffby)
        return list(dict.fromkeys(every))


REPLICATE_RULE = PairRule(pos_sameby=(SAMPLE,), pos_diffby=(), neg_sameby=(PLATE,), neg_diffby=(NEGCON,))
"""Replicates of a perturbation against the negative controls of the query's plate."""
COMPOUND_SISTER_RULE = PairRule((TARGETS,), (), (), (TARGETS,), distance="abs_cosine", multilabel=TARGETS)
"""Compounds sharing a target, compared by absolute cosine."""
CRISPR_SISTER_RULE = PairRule((TARGETS,), (), (), (TARGETS,), distance="cosine", multilabel=TARGETS)
"""Guides of the same gene, compared by cosine."""
SISTER_RULES = {"compound": COMPOUND_SISTER_RULE, "crispr": CRISPR_SISTER_RULE}
"""Sister matching rule per modality; ORF plates have one construct per gene, hence no sisters."""
COMPOUND_GENE_RULE = PairRule(
    (TARGETS,), (MODALITY,), (), (TARGETS, MODALITY), distance="abs_cosine", multilabel=TARGETS
)
"""A compound and a genetic perturbation of one of its targets; pairs within a modality are never used."""


def _similarity_lookup(values: np.ndarray, absolute: bool, measure: str = "cosine") -> tuple[np.ndarray, Callable]:
    """Row indices to hand copairs as "features", and a copairs distance that looks up their similarity
    (``measure``: cosine, or minus the Euclidean distance; ``absolute``: blind to the sign).

    copairs gathers the "feature" rows of each pair and passes them to the
    distance; the rows here are profile indices, so one matrix product serves
    every pair.
    """
    if measure == "euclidean":
        similarity = negative_distance(values, sign_free=absolute)
    else:
        cosine = cosine_similarity(values, values)
        similarity = np.abs(cosine) if absolute else cosine

    def lookup(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return similarity[first[:, 0].astype(np.intp), second[:, 0].astype(np.intp)]

    return np.arange(len(values), dtype=float)[:, None], lookup


def _named(profiles: pd.DataFrame, rows: np.ndarray | pd.Series, limit: int = 5) -> list[dict]:
    """The plate, well and perturbation of up to ``limit`` of ``rows``, for an error message."""
    return (
        profiles.loc[np.asarray(rows), [c for c in (PLATE, WELL, SAMPLE) if c in profiles.columns]]
        .head(limit)
        .to_dict("records")
    )


def _feature_values(profiles: pd.DataFrame, cosine: bool = True) -> np.ndarray:
    """The feature matrix, checked to be finite and, for the ``cosine``, without all-zero rows (which have none).

    Constant feature columns are named in a warning: a constant offset shifts every cosine.
    """
    features = feature_columns(profiles)
    values = profiles[features].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1) | (~values.any(axis=1) if cosine else False)
    if bad.any():
        raise ValueError(f"{bad.sum()} profile(s) are all zero or not finite, e.g. {_named(profiles, bad, 3)}")
    constant = [f for f, spread in zip(features, np.ptp(values, axis=0)) if spread == 0] if len(values) > 1 else []
    if constant and cosine:
        warnings.warn(
            f"{len(constant)} feature(s) are constant over the {len(values)} profiles and shift every cosine: "
            f"{constant[:5]}; drop them or normalise the profiles first",
            stacklevel=3,
        )
    return values


def check_wells(profiles: pd.DataFrame) -> None:
    """Each (plate, well) once: a duplicated well would be its own perfect replicate."""
    if WELL not in profiles.columns:
        return
    duplicated = profiles.duplicated([PLATE, WELL], keep=False)
    if duplicated.any():
        wells = profiles.loc[duplicated, [PLATE, WELL]].drop_duplicates().head(5).to_dict("records")
        raise ValueError(f"{duplicated.sum()} rows share a (plate, well) with another row, e.g. {wells}")


def _shares_label(labels: pd.Series) -> np.ndarray:
    """Square boolean matrix: do two rows' label lists share an element?"""
    vocabulary = {label: i for i, label in enumerate(sorted(set(labels.explode().dropna())))}
    indicator = np.zeros((len(labels), len(vocabulary)))
    for row, listed in enumerate(labels):
        indicator[row, [vocabulary[label] for label in listed]] = 1
    return indicator @ indicator.T > 0


def _partners(
    profiles: pd.DataFrame, sameby: Sequence[str], diffby: Sequence[str], multilabel: str | None
) -> np.ndarray:
    """Square boolean matrix of the pairs that share every ``sameby`` value and differ in every ``diffby`` value."""
    partners = ~np.eye(len(profiles), dtype=bool)
    for column in (*sameby, *diffby):
        if column == multilabel:
            same = _shares_label(profiles[column])
        else:
            values = profiles[column].to_numpy()
            same = values[:, None] == values[None, :]
        partners &= same if column in sameby else ~same
    return partners


def _require_negatives(profiles: pd.DataFrame, rule: PairRule) -> None:
    """Refuse queries with a positive but no negative under ``rule`` (their AP would be 1 by construction).

    Negative controls are never queries, so they are not checked.
    """
    positive = _partners(profiles, rule.pos_sameby, rule.pos_diffby, rule.multilabel).any(axis=1)
    negative = _partners(profiles, rule.neg_sameby, rule.neg_diffby, rule.multilabel).any(axis=1)
    lonely = positive & ~negative
    if NEGCON in profiles.columns:
        lonely &= ~profiles[NEGCON].to_numpy(dtype=bool)
    if lonely.any():
        plates = sorted(map(str, profiles.loc[lonely, PLATE].unique())) if PLATE in profiles.columns else []
        raise ValueError(
            f"{lonely.sum()} profile(s) have positives but no negative to rank them against (plates {plates}; "
            f"e.g. {_named(profiles, lonely)}); a plate needs negative controls"
        )


def _with_negatives(profiles: pd.DataFrame, rule: PairRule) -> pd.DataFrame:
    """Drop, repeatedly, the profiles that have a positive but no negative partner under a multilabel ``rule``.

    copairs' multilabel AP assumes every query has a negative; one without
    would silently be given another profile's negatives.
    """
    while True:
        positive = _partners(profiles, rule.pos_sameby, rule.pos_diffby, rule.multilabel).any(axis=1)
        negative = _partners(profiles, rule.neg_sameby, rule.neg_diffby, rule.multilabel).any(axis=1)
        lonely = positive & ~negative
        if not lonely.any():
            return profiles
        names = profiles.loc[lonely, SAMPLE].tolist() if SAMPLE in profiles.columns else int(lonely.sum())
        warnings.warn(f"profile(s) {names} have positives but no negative partner; left out", stacklevel=4)
        profiles = profiles[~lonely]


def average_precisions(profiles: pd.DataFrame, rule: PairRule, settings: MapSettings = MapSettings()) -> pd.DataFrame:
    """AP of every query profile under ``rule`` (copairs).

    Returns
    -------
    The profiles' metadata with ``average_precision``, ``n_pos_pairs`` and
    ``n_total_pairs``; one row per profile, or for a multilabel rule one row per
    profile and label it shares with another profile (the label replaces the
    list in the multilabel column). Profiles without a positive have a missing
    AP; for a multilabel rule, profiles without a negative are left out.

    Raises
    ------
    copairs.matching.UnpairedException
        No positive or no negative pair exists.
    ValueError
        A rule column is absent, a profile is all zero or not finite, or (single-label rules) a profile
        has a positive but no negative partner.
    """
    require_columns(profiles, rule.columns, "profiles")
    if rule.multilabel is None:
        _require_negatives(profiles, rule)
    else:
        profiles = _with_negatives(profiles, rule)
    metadata = profiles[rule.columns].reset_index(drop=True).assign(**{_ROW: np.arange(len(profiles))})
    values = _feature_values(profiles, cosine=settings.similarity == "cosine")
    index, lookup = _similarity_lookup(values, absolute=rule.distance == "abs_cosine", measure=settings.similarity)
    arguments = {
        "pos_sameby": list(rule.pos_sameby),
        "pos_diffby": list(rule.pos_diffby),
        "neg_sameby": list(rule.neg_sameby),
        "neg_diffby": list(rule.neg_diffby),
        "batch_size": settings.batch_size,
        "distance": lookup,
        "progress_bar": False,
    }
    if rule.multilabel is None:
        scores = copairs_map.average_precision(metadata, index, **arguments)
    else:
        scores = copairs_map.multilabel.average_precision(metadata, index, multilabel_col=rule.multilabel, **arguments)
    scores = scores.reset_index(drop=True)
    context = [column for column in metadata_columns(profiles) if column not in rule.columns]
    rows = profiles[context].iloc[scores.pop(_ROW).to_numpy()].reset_index(drop=True)
    return pd.concat([rows, scores], axis=1)


def mean_average_precisions(
    ap: pd.DataFrame, unit: str, settings: MapSettings = MapSettings(), group: str = ""
) -> pd.DataFrame:
    """MAP per ``unit`` value, its p-value by ``settings.method``, BH-corrected p-value and retrieval call.

    The tests are in :mod:`cellstudy.evaluation.significance`; Benjamini-Hochberg runs over the units of ``ap``.

    Parameters
    ----------
    ap
        Output of :func:`average_precisions`; queries without a positive are ignored.
    unit
        The column whose values are averaged over.
    group
        The identity of ``ap``'s group (task and group labels); it seeds the study test's per-unit nulls.

    Returns
    -------
    Columns ``unit`` and :data:`SCORE_COLUMNS`; ``n_profiles`` counts the queries behind each mAP and
    ``perturbations`` names the perturbations they are (``|``-separated).
    """
    scored = ap[ap["average_precision"].notna() & (ap["n_pos_pairs"] > 0)].reset_index(drop=True)
    if scored.empty:
        return pd.DataFrame(columns=[unit, *SCORE_COLUMNS])
    scores = significance.unit_p_values(
        scored, unit, settings.method, settings.null_size, settings.seed, group, settings.threshold
    )
    scores["corrected_p_value"] = multipletests(scores["p_value"], method="fdr_bh")[1]
    scores["retrieved"] = scores["corrected_p_value"] < settings.threshold
    scores["perturbations"] = _perturbation_sets(scored, unit).reindex(scores[unit]).to_numpy()
    return scores[[unit, *SCORE_COLUMNS]]


def _perturbation_sets(scored: pd.DataFrame, unit: str) -> pd.Series:
    """Per unit, the perturbations (``Metadata_broad_sample``) of its queries, sorted and ``|``-separated."""
    if SAMPLE not in scored.columns or unit == SAMPLE:
        return pd.Series(scored[unit].unique(), index=scored[unit].unique()).astype(str)
    return scored.groupby(unit, sort=True)[SAMPLE].agg(lambda samples: "|".join(sorted(set(map(str, samples)))))


Group = tuple[dict[str, object], pd.DataFrame, PairRule]
"""One unit of work: its labels (column -> value), its profiles, its pair rule."""


def _group_identity(task: str, labels: dict[str, object]) -> str:
    """A stable name of a group: its task and labels (seeds its units' study nulls)."""
    return "\x1f".join([task, *(f"{column}={labels[column]}" for column in sorted(labels))])


def _without_units(unit: str, labels: dict[str, object]) -> pd.DataFrame:
    """The row that reports a group without any unit to test: ``n_profiles`` 0, nothing retrieved."""
    row = {unit: pd.NA, "n_profiles": 0, "mean_average_precision": np.nan, "p_value": np.nan, "exact_null": False}
    row |= {"corrected_p_value": np.nan, "retrieved": False, "perturbations": ""}
    return pd.DataFrame([row]).assign(**labels)


@dataclass(frozen=True)
class TaskQueries:
    """A task's average precisions, group by group, before any significance test (they do not depend on it).

    ``groups`` holds ``(labels, ap)`` per group; ``ap`` is ``None`` for a group without a positive or negative pair.
    """

    task: str
    unit: str
    groups: list[tuple[dict[str, object], pd.DataFrame | None]]


def _queries(
    groups: Iterable[Group],
    unit: str,
    settings: MapSettings,
    task: str,
    keep_queries: Callable[[pd.DataFrame], pd.Series] | None = None,
) -> TaskQueries:
    """Run copairs on every group: the AP of its queries (``keep_queries`` of them)."""
    scored = []
    for labels, profiles, rule in tqdm(list(groups), desc=task, leave=False):
        try:
            ap = average_precisions(profiles, rule, settings) if len(profiles) else None
        except UnpairedException:
            ap = None
        if ap is not None and keep_queries is not None:
            ap = ap[keep_queries(ap)]
        scored.append((labels, ap))
    return TaskQueries(task, unit, scored)


def score(queries: TaskQueries, settings: MapSettings = MapSettings()) -> pd.DataFrame:
    """Test every unit of ``queries``; one row per unit and group, labelled with the group and the task.

    A group without a unit to test keeps one row (:func:`_without_units`) and is named in a warning.
    """
    unit, task = queries.unit, queries.task
    tables = []
    for labels, ap in queries.groups:
        scores = None if ap is None else mean_average_precisions(ap, unit, settings, _group_identity(task, labels))
        if scores is None or scores.empty:
            warnings.warn(f"{task}: group {labels} has no unit to test (no positive or negative pair)", stacklevel=3)
            scores = _without_units(unit, labels)
        tables.append(scores.assign(**labels))
    label_columns = list(tables[0].columns.difference([unit, *SCORE_COLUMNS], sort=False)) if tables else []
    result = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[unit, *SCORE_COLUMNS])
    result.insert(0, "task", task)
    return result[["task", *label_columns, unit, *SCORE_COLUMNS]]


def tested(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of units that were tested (without the rows that report groups without units)."""
    return results[results["n_profiles"] > 0]


def _groups(profiles: pd.DataFrame, columns: Sequence[str]) -> Iterator[tuple[dict[str, object], pd.DataFrame]]:
    """(labels, rows) per distinct value of ``columns``."""
    for keys, rows in profiles.groupby(list(columns), sort=True):
        yield dict(zip(columns, keys)), rows


def _without_empty(profiles: pd.DataFrame) -> pd.DataFrame:
    """Drop wells without a perturbation: missing ``broad_sample`` or ``pert_type`` ``"empty"``."""
    empty = profiles[SAMPLE].isna()
    if PERT_TYPE in profiles.columns:
        empty |= profiles[PERT_TYPE] == cpjump1.EMPTY_WELL
    return profiles[~empty]


def replicate_retrieval(profiles: pd.DataFrame, settings: MapSettings = MapSettings()) -> pd.DataFrame:
    """Replicate retrieval: can each perturbation's wells find each other among its plate's negative controls?

    :func:`score` of :func:`replicate_queries`.
    """
    return score(replicate_queries(profiles, settings), settings)


def replicate_queries(profiles: pd.DataFrame, settings: MapSettings = MapSettings()) -> TaskQueries:
    """The queries of replicate retrieval.

    Parameters
    ----------
    profiles
        Well-level profiles with :data:`GROUP_COLUMNS`, ``Metadata_Plate``,
        ``Metadata_negcon`` and ``Metadata_broad_sample``; empty wells are
        dropped, negative controls serve as negatives only (they are not queries).

    Returns
    -------
    The APs of the non-control wells per group; scored (:func:`score`): one row per group and
    perturbation: ``task``, :data:`GROUP_COLUMNS`, ``Metadata_broad_sample``, :data:`SCORE_COLUMNS`.
    """
    require_columns(profiles, [*GROUP_COLUMNS, PLATE, NEGCON, SAMPLE], "profiles")
    negcon_mask(profiles)
    check_wells(profiles)
    wells = _without_empty(profiles)
    groups = ((labels, rows, REPLICATE_RULE) for labels, rows in _groups(wells, GROUP_COLUMNS))
    return _queries(groups, SAMPLE, settings, REPLICATE_RETRIEVAL, keep_queries=lambda ap: ~ap[NEGCON])


def retrieved_only(consensus_profiles: pd.DataFrame, replicate_results: pd.DataFrame) -> pd.DataFrame:
    """The consensus profiles of perturbations retrieved in replicate retrieval (same group and sample)."""
    keys = [*GROUP_COLUMNS, SAMPLE]
    require_columns(replicate_results, [*keys, "retrieved"], "replicate results")
    retrieved = replicate_results.loc[replicate_results["retrieved"].eq(True), keys].drop_duplicates()
    return consensus_profiles.merge(retrieved, on=keys, how="inner")


def matchable(consensus_profiles: pd.DataFrame) -> pd.DataFrame:
    """Perturbations a matching task can use, with their :data:`TARGETS` lists.

    Drops empty wells, negative controls and perturbations without a target; the matching tasks then keep
    the replicable ones of each group (:func:`_replicable`). :data:`TARGETS` is ``Metadata_target_list``
    split on ``|``.
    """
    require_columns(consensus_profiles, [*GROUP_COLUMNS, SAMPLE, NEGCON, TARGET_LIST], "consensus profiles")
    negcon_mask(consensus_profiles)
    profiles = _without_empty(consensus_profiles)
    profiles = profiles[~profiles[NEGCON] & profiles[TARGET_LIST].notna()]
    targets = profiles[TARGET_LIST].str.split(cpjump1.TARGET_SEPARATOR)
    return profiles.assign(**{TARGETS: targets}).reset_index(drop=True)


def _replicable(profiles: pd.DataFrame, replicate_results: pd.DataFrame | None) -> pd.DataFrame:
    """``profiles`` retrieved in replicate retrieval, or all of them when ``replicate_results`` is ``None``."""
    return profiles if replicate_results is None else retrieved_only(profiles, replicate_results)


def _genes_with_sisters(guides: pd.DataFrame) -> pd.DataFrame:
    """Guides whose gene has another guide in the table (the paper drops genes with one replicable guide)."""
    counts = guides[GENE].map(guides[GENE].value_counts())
    return guides[counts > 1]


def sister_matching(
    consensus_profiles: pd.DataFrame,
    replicate_results: pd.DataFrame | None = None,
    settings: MapSettings = MapSettings(),
) -> pd.DataFrame:
    """Sister matching: do perturbations of the same target find each other? :func:`score` of :func:`sister_queries`."""
    return score(sister_queries(consensus_profiles, replicate_results, settings), settings)


def sister_queries(
    consensus_profiles: pd.DataFrame,
    replicate_results: pd.DataFrame | None = None,
    settings: MapSettings = MapSettings(),
) -> TaskQueries:
    """The queries of sister matching.

    Compounds match on any shared target (absolute cosine); CRISPR guides on
    their gene (cosine), genes left with a single guide removed; ORF groups are
    skipped (one construct per gene). See :func:`matchable` and :func:`_replicable` for which
    perturbations take part.

    Returns
    -------
    The APs per group; scored (:func:`score`): one row per group and target gene: ``task``,
    :data:`GROUP_COLUMNS`, :data:`TARGETS` (the gene), :data:`SCORE_COLUMNS`.
    """
    profiles = matchable(consensus_profiles)

    def groups() -> Iterator[Group]:
        for labels, rows in _groups(profiles, GROUP_COLUMNS):
            modality = labels[MODALITY]
            rows = _replicable(rows, replicate_results)
            if modality == "crispr":
                require_columns(rows, [GENE], "CRISPR consensus profiles")
                rows = _genes_with_sisters(rows)
            if modality in SISTER_RULES:
                yield labels, rows, SISTER_RULES[modality]

    return _queries(groups(), TARGETS, settings, SISTER_MATCHING)


def _restrict_targets(compounds: pd.DataFrame, genes: set[str]) -> pd.DataFrame:
    """Compounds with their target lists cut to ``genes``; compounds left with none dropped."""
    targets = compounds[TARGETS].map(lambda listed: [gene for gene in listed if gene in genes])
    return compounds.assign(**{TARGETS: targets})[targets.str.len() > 0]


def compound_gene_matching(
    compound_consensus: pd.DataFrame,
    genetic_consensus: pd.DataFrame,
    replicate_results: pd.DataFrame | None = None,
    settings: MapSettings = MapSettings(),
) -> pd.DataFrame:
    """Compound-gene matching: does a compound find genetic perturbations of its targets, and vice versa?

    :func:`score` of :func:`compound_gene_queries`.
    """
    queries = compound_gene_queries(compound_consensus, genetic_consensus, replicate_results, settings)
    return score(queries, settings)


def compound_gene_queries(
    compound_consensus: pd.DataFrame,
    genetic_consensus: pd.DataFrame,
    replicate_results: pd.DataFrame | None = None,
    settings: MapSettings = MapSettings(),
) -> TaskQueries:
    """The queries of compound-gene matching.

    Every compound group (cell type, time point) is matched against every
    genetic group (CRISPR or ORF, time point) of the same cell type. Compound
    target lists are cut to the genes perturbed in the genetic group; positives
    share a target and differ in modality, negatives differ in both; absolute
    cosine. See :func:`matchable` and :func:`_replicable` for which perturbations take part.

    Returns
    -------
    The APs per group pair; scored (:func:`score`): one row per group pair and target gene: ``task``,
    :data:`GROUP_COLUMNS` (of the compounds), ``Metadata_genetic_modality``, ``Metadata_genetic_timepoint``,
    :data:`TARGETS` (the gene), :data:`SCORE_COLUMNS`.

    Raises
    ------
    ValueError
        The two tables have different feature columns.
    """
    compounds = matchable(compound_consensus)
    genetic = matchable(genetic_consensus)
    compounds = compounds[compounds[MODALITY] == "compound"]
    genetic = genetic[genetic[MODALITY].isin(GENETIC_MODALITIES)]
    if feature_columns(compounds) != feature_columns(genetic):
        raise ValueError("compound and genetic consensus profiles have different feature columns")

    def groups() -> Iterator[Group]:
        for compound_labels, compound_rows in _groups(compounds, GROUP_COLUMNS):
            same_cell = genetic[genetic[CELL_TYPE] == compound_labels[CELL_TYPE]]
            for genetic_labels, genetic_rows in _groups(same_cell, [MODALITY, TIMEPOINT]):
                genetic_rows = _replicable(genetic_rows, replicate_results)
                perturbed = set(genetic_rows[TARGETS].explode())
                labels = {
                    **compound_labels,
                    GENETIC_MODALITY: genetic_labels[MODALITY],
                    GENETIC_TIMEPOINT: genetic_labels[TIMEPOINT],
                }
                compound_part = _restrict_targets(_replicable(compound_rows, replicate_results), perturbed)
                rows = pd.concat([compound_part, genetic_rows], ignore_index=True)
                yield labels, rows, COMPOUND_GENE_RULE

    return _queries(groups(), TARGETS, settings, COMPOUND_GENE_MATCHING)


def run_tasks(profiles: pd.DataFrame, settings: MapSettings = MapSettings()) -> pd.DataFrame:
    """The three CPJUMP1 tasks on post-processed well-level profiles, as the paper chains them.

    Replicate retrieval on the wells; median consensus per perturbation; sister matching and
    compound–gene matching on the consensus profiles of the perturbations retrieved as replicable.
    Returns the per-unit results of all three tasks in one table (column ``task``).
    """
    return run_tasks_each(profiles, [settings])[0]


def run_tasks_each(profiles: pd.DataFrame, settings: Sequence[MapSettings]) -> list[pd.DataFrame]:
    """:func:`run_tasks` under each of ``settings`` (e.g. the study's and the paper's test), in that order.

    The replicate queries' APs do not depend on the test, so they are computed once, with the first
    settings' similarity and batch size; each settings then chains its own replicable perturbations.

    Raises
    ------
    ValueError
        ``settings`` is empty or its entries compare profiles differently (``similarity``).
    """
    if not settings or len({entry.similarity for entry in settings}) > 1:
        raise ValueError("run_tasks_each needs one or more settings, all with the same similarity")
    queries = replicate_queries(profiles, settings[0])
    consensus_profiles = consensus(profiles)
    results = []
    for entry in settings:
        replicates = score(queries, entry)
        sisters = sister_matching(consensus_profiles, replicates, entry)
        matches = compound_gene_matching(consensus_profiles, consensus_profiles, replicates, entry)
        results.append(_stacked([replicates, sisters, matches]))
    return results


def _stacked(results: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-task results in one table, with every :data:`SUMMARY_COLUMNS` (a task without units adds none of its own)."""
    stacked = pd.concat(results, ignore_index=True)
    return stacked.assign(**{column: pd.NA for column in SUMMARY_COLUMNS if column not in stacked.columns})


def queries_on_every_perturbation(profiles: pd.DataFrame, settings: MapSettings = MapSettings()) -> list[TaskQueries]:
    """The three tasks' queries, the matching tasks on every perturbation (no replicate filter).

    Their units are the same whatever the significance test, its seed or the profiling method, so
    :func:`score_every` can rescore them cheaply (null seeds, test methods) and methods can be compared unit by unit.
    """
    return [replicate_queries(profiles, settings), *matching_on_every_perturbation(profiles, settings)]


def matching_on_every_perturbation(profiles: pd.DataFrame, settings: MapSettings = MapSettings()) -> list[TaskQueries]:
    """Sister and compound-gene matching's queries on the consensus of every perturbation of well ``profiles``."""
    consensus_profiles = consensus(profiles)
    return [
        sister_queries(consensus_profiles, None, settings),
        compound_gene_queries(consensus_profiles, consensus_profiles, None, settings),
    ]


def score_every(queries: Sequence[TaskQueries], settings: MapSettings = MapSettings()) -> pd.DataFrame:
    """:func:`score` of every task's queries, in one table like :func:`run_tasks`'."""
    return _stacked([score(task, settings) for task in queries])


def fraction_retrieved(results: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Share of retrieved units per group, with the mean of their mAPs.

    Parameters
    ----------
    results
        Output of one task, or several concatenated.
    by
        Grouping columns; default the :data:`SUMMARY_COLUMNS` present in ``results``.

    Returns
    -------
    ``by`` columns; ``n`` (units tested) and ``n_sets`` (distinct sets of perturbations behind them: in the
    matching tasks several target genes can rest on the same few compounds, so ``n_sets`` is the number of
    independent units); ``n_retrieved`` and ``retrieved_sets`` (the same for the retrieved units);
    ``fraction_retrieved`` (NaN for a group without units) and ``mean_average_precision``.
    """
    by = [column for column in SUMMARY_COLUMNS if column in results.columns] if by is None else list(by)
    require_columns(results, [*by, "n_profiles", "retrieved", "mean_average_precision", "perturbations"], "results")
    units = results.assign(
        retrieved=results["retrieved"].astype(float).where(results["n_profiles"] > 0),
        perturbations=results["perturbations"].where(results["n_profiles"] > 0),
    )
    units = units.assign(retrieved_perturbations=units["perturbations"].where(units["retrieved"] == 1))
    return (
        units.groupby(by, dropna=False, sort=True)
        .agg(
            n=("retrieved", "count"),
            n_sets=("perturbations", "nunique"),
            n_retrieved=("retrieved", "sum"),
            retrieved_sets=("retrieved_perturbations", "nunique"),
            fraction_retrieved=("retrieved", "mean"),
            mean_average_precision=("mean_average_precision", "mean"),
        )
        .reset_index()
        .astype({"n_retrieved": int})
    )
