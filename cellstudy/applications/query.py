"""Target queries: which genes does a compound look like, which compounds look like a gene's perturbation?

The query compares consensus profiles (:func:`cellstudy.profiling.profiles.consensus`) of
one kind of table or another - learned embeddings, classical features, the
published CellProfiler profiles - as only the ``Metadata_*`` conventions of
:mod:`cellstudy.data.cpjump1` are read. As the paper's compound-gene matching
(:mod:`cellstudy.evaluation.retrieval`), a compound at one time point is compared with the
CRISPR or ORF profiles of every gene at one genetic time point, in the same
cell type, by absolute cosine: an inhibitor may look like the knockout or like
the anti-correlated over-expression. The signed cosine is reported next to it.

- :func:`gene_profiles`: one profile per gene (CRISPR: the mean of its guides).
- :func:`rank_genes`: given a compound, the genes ranked; :func:`rank_compounds`: the reverse.
- :func:`pair_p_values`: each pair's score against the scores of every compound-gene pairing of
  its comparison.
- :func:`true_target_ranks`: rank of the annotated (and, simulated, the true) target of every
  compound, for comparing methods.
- :func:`read_profiles`: a consensus table from CSV, its features in one block of memory.
- :func:`as_text`: the top of the ranked lists, for the command line (``cellstudy query ...``).

In a notebook::

    perturbations = profiles.consensus(wells)
    query.rank_genes(perturbations, "BI-2536").query("rank <= 5")
    query.rank_compounds(perturbations, "PLK1", modalities=["crispr"])
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from statsmodels.stats.multitest import multipletests

from cellstudy.columns import (
    CELL_TYPE,
    GENE,
    GENETIC_MODALITIES,
    GENETIC_MODALITY,
    GENETIC_TIMEPOINT,
    METADATA_PREFIX,
    MODALITY,
    NAME,
    SAMPLE,
    TARGET_LIST,
    TIMEPOINT,
)
from cellstudy.data import cpjump1
from cellstudy.evaluation.significance import TIE_TOLERANCE
from cellstudy.profiling.profiles import (
    feature_columns,
    gene_profiles,
    metadata_columns,
    require_columns,
    treatment_profiles,
)
from cellstudy.similarity import cosine_similarity

COMPOUND = "compound"
"""``Metadata_modality`` of compounds."""

COMPOUND_COLUMNS = [SAMPLE, NAME, TARGET_LIST]
"""Columns that describe the compound of a pair."""
SCORE_COLUMNS = ["cosine", "score", "rank", "p_value", "q_value", "is_annotated_target"]
"""Per-pair result columns: signed cosine, score = its absolute value, rank in the list (1 = most
similar), p-value (:func:`pair_p_values`), Benjamini-Hochberg q-value within the list, and whether the gene is
among the compound's annotated targets (missing when the compound has no target list)."""
RESULT_COLUMNS = [CELL_TYPE, TIMEPOINT, *COMPOUND_COLUMNS, GENETIC_MODALITY, GENETIC_TIMEPOINT, GENE, *SCORE_COLUMNS]
"""Columns of :func:`rank_genes` and :func:`rank_compounds`."""
GENE_LIST = [CELL_TYPE, TIMEPOINT, SAMPLE, GENETIC_MODALITY, GENETIC_TIMEPOINT]
"""One ranked list of genes (:func:`rank_genes`): a compound at a time point against one genetic group."""
COMPOUND_LIST = [CELL_TYPE, GENETIC_MODALITY, GENETIC_TIMEPOINT, GENE, TIMEPOINT]
"""One ranked list of compounds (:func:`rank_compounds`): a gene in one genetic group against the
compounds of one time point."""
CLOSE_MATCHES = 5
"""Suggestions listed when a queried name is unknown."""


def compound_profiles(consensus: pd.DataFrame) -> pd.DataFrame:
    """The compounds' consensus profiles (negative controls left out), with :data:`COMPOUND_COLUMNS`
    (``Metadata_pert_iname`` and ``Metadata_target_list`` missing where the table lacks them).
    """
    compounds = treatment_profiles(consensus)
    compounds = compounds[compounds[MODALITY] == COMPOUND]
    absent = {column: pd.NA for column in COMPOUND_COLUMNS if column not in compounds.columns}
    return compounds.assign(**absent).reset_index(drop=True)


def _feature_matrix(profiles: pd.DataFrame, features: Sequence[str], names: str) -> np.ndarray:
    """The feature values, checked to be finite and not all zero (no cosine); ``names`` column names the culprits."""
    values = profiles[list(features)].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1) | ~values.any(axis=1)
    if bad.any():
        raise ValueError(f"profile(s) {profiles.loc[bad, names].head(5).tolist()} are all zero or not finite")
    return values


def pair_p_values(scores: np.ndarray) -> np.ndarray:
    """p-value of every score of a compounds × genes matrix against all the matrix's scores.

    ``p = #{pairs with score >= s} / n_pairs``, the pair itself included, i.e.
    ``(1 + #{others >= s}) / (1 + n_others)`` (scores within :data:`TIE_TOLERANCE`
    count as equal): a permutation test, valid when under the null hypothesis
    the pair is a random pairing of one of the compounds with one of the genes
    (its score exchangeable with the others').

    The null is made of the screen's own profiles, so it keeps the features'
    correlations; a null that permutes features does not, and with correlated
    features (classical, CellProfiler) it calls most unrelated pairs
    significant. A pair's p-value is the same whichever side is queried, and
    the smallest possible is ``1 / n_pairs``. Truly related pairs among the
    others make it conservative; a gene or compound that resembles everything
    (a strong, generic phenotype) gets small p-values with every partner, so
    its list is best read by rank.
    """
    ordered = np.sort(scores, axis=None)
    return (ordered.size - np.searchsorted(ordered, scores - TIE_TOLERANCE, side="left")) / ordered.size


def _targets(target_list: object) -> list[str]:
    """The genes of a ``|``-separated target list (none if missing)."""
    return target_list.split(cpjump1.TARGET_SEPARATOR) if isinstance(target_list, str) else []


def _is_annotated(target_list: object, gene: str) -> object:
    """Whether ``gene`` is in a ``|``-separated target list; missing if there is no list."""
    return gene in _targets(target_list) if isinstance(target_list, str) else pd.NA


def _comparisons(
    compounds: pd.DataFrame, genes: pd.DataFrame
) -> Iterator[tuple[dict[str, object], pd.DataFrame, pd.DataFrame]]:
    """(labels, compounds, genes) per compound time point × genetic modality and time point, same cell type."""
    for (cell_type, timepoint), compound_rows in compounds.groupby([CELL_TYPE, TIMEPOINT], sort=True):
        same_cell = genes[genes[CELL_TYPE] == cell_type]
        for (modality, genetic_timepoint), gene_rows in same_cell.groupby([MODALITY, TIMEPOINT], sort=True):
            labels = {
                CELL_TYPE: cell_type,
                TIMEPOINT: timepoint,
                GENETIC_MODALITY: modality,
                GENETIC_TIMEPOINT: genetic_timepoint,
            }
            yield labels, compound_rows.reset_index(drop=True), gene_rows.reset_index(drop=True)


Selection = Callable[[pd.DataFrame, pd.DataFrame], tuple[np.ndarray, np.ndarray]]
"""(compounds, genes) of one comparison -> row positions of the queried compounds and genes."""


def _pairs(labels: dict[str, object], compounds: pd.DataFrame, genes: pd.DataFrame, select: Selection) -> pd.DataFrame:
    """The selected compound-gene pairs of one comparison: signed cosine, score, p-value (against all its
    pairs), annotation.
    """
    features = feature_columns(compounds)
    cosine = cosine_similarity(_feature_matrix(compounds, features, SAMPLE), _feature_matrix(genes, features, GENE))
    p_values = pair_p_values(np.abs(cosine))
    compound_rows, gene_rows = select(compounds, genes)
    chosen = np.ix_(compound_rows, gene_rows)
    pairs = pd.concat(
        [
            compounds[COMPOUND_COLUMNS].iloc[np.repeat(compound_rows, len(gene_rows))].reset_index(drop=True),
            genes[[GENE]].iloc[np.tile(gene_rows, len(compound_rows))].reset_index(drop=True),
        ],
        axis=1,
    )
    annotated = [_is_annotated(targets, gene) for targets, gene in zip(pairs[TARGET_LIST], pairs[GENE])]
    return pairs.assign(
        **labels,
        cosine=cosine[chosen].ravel(),
        score=np.abs(cosine[chosen].ravel()),
        p_value=p_values[chosen].ravel(),
        is_annotated_target=pd.array(annotated, dtype="boolean"),
    )


def _ranked(pairs: list[pd.DataFrame], by: list[str]) -> pd.DataFrame:
    """Rank and BH-correct the pairs within each list of ``by``; sorted by list, then rank."""
    table = pd.concat(pairs, ignore_index=True)
    lists = table.groupby(by, sort=False)
    rank = lists["score"].rank(method="min", ascending=False).astype(int)
    q_value = lists["p_value"].transform(lambda p: multipletests(p, method="fdr_bh")[1])
    ranked = table.assign(rank=rank, q_value=q_value)[RESULT_COLUMNS]
    return ranked.sort_values([*by, "rank"], kind="stable").reset_index(drop=True)


def _in_cell_type(table: pd.DataFrame, cell_type: str | None) -> pd.DataFrame:
    """The rows of ``cell_type`` (all if None)."""
    if cell_type is None:
        return table
    if cell_type not in set(table[CELL_TYPE]):
        raise ValueError(f"cell type {cell_type!r} is not in the profiles; they have {sorted(set(table[CELL_TYPE]))}")
    return table[table[CELL_TYPE] == cell_type]


def _unknown(kind: str, name: str, candidates: Sequence[str]) -> ValueError:
    """The error for an unknown query name, with the closest known names."""
    by_folded = {candidate.casefold(): candidate for candidate in candidates}
    close = difflib.get_close_matches(name.casefold(), list(by_folded), n=CLOSE_MATCHES, cutoff=0.5)
    hint = f"close matches: {[by_folded[match] for match in close]}" if close else f"{len(by_folded)} known"
    return ValueError(f"{kind} {name!r} is not in the consensus profiles ({hint})")


def _select_compound(compounds: pd.DataFrame, compound: str) -> pd.DataFrame:
    """Rows whose broad sample is ``compound`` or whose name is ``compound`` (any case)."""
    names = compounds[NAME].astype("string").str.casefold()
    rows = compounds[(compounds[SAMPLE] == compound) | (names == compound.casefold()).fillna(False)]
    if rows.empty:
        known = [*compounds[SAMPLE].astype(str), *compounds[NAME].dropna().astype(str)]
        raise _unknown("compound", compound, known)
    return rows


def _select_gene(genes: pd.DataFrame, gene: str) -> pd.DataFrame:
    """Rows of ``gene`` (any case)."""
    rows = genes[genes[GENE].astype(str).str.casefold() == gene.casefold()]
    if rows.empty:
        raise _unknown("gene", gene, genes[GENE].astype(str).tolist())
    return rows


def _all_gene_profiles(consensus: pd.DataFrame, modalities: Sequence[str]) -> pd.DataFrame:
    """:func:`gene_profiles` of every modality in ``modalities``, in one table."""
    return pd.concat([gene_profiles(consensus, modality) for modality in modalities], ignore_index=True)


def _query(compounds: pd.DataFrame, genes: pd.DataFrame, select: Selection, by: list[str], what: str) -> pd.DataFrame:
    """Score the selected pairs of every comparison and rank them within the lists of ``by``."""
    pairs = [_pairs(*comparison, select) for comparison in _comparisons(compounds, genes)]
    pairs = [table for table in pairs if not table.empty]
    if not pairs:
        raise ValueError(f"{what}: no compound and genetic consensus profiles share a cell type")
    return _ranked(pairs, by)


def rank_genes(
    consensus: pd.DataFrame,
    compound: str,
    modalities: Sequence[str] = GENETIC_MODALITIES,
    cell_type: str | None = None,
) -> pd.DataFrame:
    """Genes ranked by how much their profiles look like a compound's.

    Parameters
    ----------
    consensus
        Consensus profiles (:func:`cellstudy.profiling.profiles.consensus`) of the compound, the other
        compounds (they make up the null, :func:`pair_p_values`) and the genetic perturbations.
    compound
        ``Metadata_broad_sample`` or ``Metadata_pert_iname`` (any case); a name shared
        by several broad samples queries each.
    modalities
        Genetic modalities to rank the genes' profiles of (:func:`gene_profiles`).
    cell_type
        Only this cell type (default: every cell type).

    Returns
    -------
    :data:`RESULT_COLUMNS`, one row per gene in each list of :data:`GENE_LIST`
    (per cell type, compound time point, genetic modality and time point; ranks
    and q-values are within a list), sorted by list, then rank.

    Raises
    ------
    ValueError
        The compound, or the cell type, is not in the profiles (the message names
        it, with the closest names), or no genetic profile shares its cell type.
    """
    compounds = _in_cell_type(compound_profiles(consensus), cell_type)
    genes = _in_cell_type(_all_gene_profiles(consensus, modalities), cell_type)
    samples = set(_select_compound(compounds, compound)[SAMPLE])

    def select(compound_rows: pd.DataFrame, gene_rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero(compound_rows[SAMPLE].isin(samples)), np.arange(len(gene_rows))

    return _query(compounds, genes, select, GENE_LIST, f"compound {compound!r}")


def rank_compounds(
    consensus: pd.DataFrame,
    gene: str,
    modalities: Sequence[str] = GENETIC_MODALITIES,
    cell_type: str | None = None,
) -> pd.DataFrame:
    """Compounds ranked by how much their profiles look like a gene's CRISPR or ORF profile.

    The reverse of :func:`rank_genes`, with the same parameters, a gene symbol
    (any case) instead of a compound; a pair has the same cosine, score and
    p-value in both directions. Returns :data:`RESULT_COLUMNS`, one row per
    compound in each list of :data:`COMPOUND_LIST`, sorted by list, then rank.
    """
    compounds = _in_cell_type(compound_profiles(consensus), cell_type)
    genes = _in_cell_type(_all_gene_profiles(consensus, modalities), cell_type)
    symbols = set(_select_gene(genes, gene)[GENE])

    def select(compound_rows: pd.DataFrame, gene_rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(len(compound_rows)), np.flatnonzero(gene_rows[GENE].isin(symbols))

    return _query(compounds, genes, select, COMPOUND_LIST, f"gene {gene!r}")


def _best_ranked(genes: Sequence[str], ranks: dict[str, int]) -> tuple[object, float]:
    """(gene, rank) of the best-ranked of ``genes`` that has a rank; missing if none."""
    ranked = [(ranks[gene], gene) for gene in genes if gene in ranks]
    if not ranked:
        return pd.NA, np.nan
    rank, gene = min(ranked)
    return gene, rank


def _truth_columns(truth: pd.DataFrame, ranks: dict[str, int]) -> dict[str, object]:
    """``true_target``, ``true_rank`` and ``polypharmacology`` of one compound from its ground-truth rows."""
    sharing = truth[truth["shares_phenotype"].astype(bool)]
    true_target, true_rank = _best_ranked(sharing[GENE].tolist(), ranks)
    polypharmacology = bool((~sharing["annotated"].astype(bool)).any())
    return {"true_target": true_target, "true_rank": true_rank, "polypharmacology": polypharmacology}


def true_target_ranks(
    consensus: pd.DataFrame, truth: pd.DataFrame | None = None, modalities: Sequence[str] = GENETIC_MODALITIES
) -> pd.DataFrame:
    """Rank of the annotated target of every compound in its lists of genes, to compare methods.

    For every compound with an annotated target among the genes perturbed in a
    list (:data:`GENE_LIST`; genes ranked by score as in :func:`rank_genes`), the
    best rank of any such target. With a simulated ground truth, also the best
    rank of any perturbed gene that truly drives the compound's phenotype.

    Parameters
    ----------
    consensus
        Consensus profiles of compounds and genetic perturbations.
    truth
        Optional :attr:`cellstudy.simulation.simulate.SimulationResult.pairs`: per cell type,
        compound and gene, ``annotated`` and ``shares_phenotype``.
    modalities
        Genetic modalities to rank the genes' profiles of.

    Returns
    -------
    One row per compound and list: :data:`GENE_LIST`, ``Metadata_pert_iname``,
    ``n_genes`` (genes ranked; a random ranking puts a single target at
    ``(n_genes + 1) / 2`` on average), ``annotated_target``, ``annotated_rank``;
    with ``truth``, also ``true_target`` and ``true_rank`` (missing when no
    perturbed gene shares the phenotype) and ``polypharmacology`` (the truth
    names a phenotype-sharing gene outside the annotation).
    """
    if truth is not None:
        require_columns(truth, [CELL_TYPE, SAMPLE, GENE, "annotated", "shares_phenotype"], "ground truth pairs")
        truth_of = dict(tuple(truth.groupby([CELL_TYPE, SAMPLE], sort=False)))
    features = feature_columns(consensus)
    comparisons = _comparisons(compound_profiles(consensus), _all_gene_profiles(consensus, modalities))
    rows = []
    for labels, compounds, genes in comparisons:
        compound_values = _feature_matrix(compounds, features, SAMPLE)
        scores = np.abs(cosine_similarity(compound_values, _feature_matrix(genes, features, GENE)))
        for record, gene_ranks in zip(compounds[COMPOUND_COLUMNS].to_dict("records"), rankdata(-scores, axis=1)):
            ranks = dict(zip(genes[GENE], gene_ranks.astype(int).tolist()))
            target, target_rank = _best_ranked(_targets(record[TARGET_LIST]), ranks)
            if pd.isna(target):
                continue
            row = {
                **labels,
                SAMPLE: record[SAMPLE],
                NAME: record[NAME],
                "n_genes": len(genes),
                "annotated_target": target,
                "annotated_rank": target_rank,
            }
            if truth is not None:
                row |= _truth_columns(truth_of.get((labels[CELL_TYPE], record[SAMPLE]), truth.iloc[:0]), ranks)
            rows.append(row)
    return pd.DataFrame(rows)


def read_profiles(path: str | os.PathLike) -> pd.DataFrame:
    """Read a profile table from CSV, its feature columns as one float block after the ``Metadata_*`` columns.

    ``pd.read_csv`` gives one block of memory per column; grouping a table of
    hundreds of such features (:func:`gene_profiles`) gives a fragmented frame
    that pandas warns about (``PerformanceWarning``) at every column it inserts.

    Raises
    ------
    ValueError
        The table has no feature column, or a non-numeric one (:func:`feature_columns`).
    """
    table = pd.read_csv(path)
    features = feature_columns(table)
    values = pd.DataFrame(table[features].to_numpy(dtype=float), index=table.index, columns=features)
    return pd.concat([table[metadata_columns(table)], values], axis="columns")


def _short(column: str) -> str:
    """A column name without the ``Metadata_`` prefix, for display."""
    return column.removeprefix(METADATA_PREFIX)


def as_text(results: pd.DataFrame, by: Sequence[str], top: int = 10) -> str:
    """The ``top`` ranks of every list of ``by`` in ``results``, one block per list headed by what the list shares."""
    blocks = []
    for _, rows in results[results["rank"] <= top].groupby(list(by), sort=False):
        shared = [c for c in rows.columns if c not in SCORE_COLUMNS and rows[c].nunique(dropna=False) == 1]
        header = ", ".join(f"{_short(column)}={rows[column].iloc[0]}" for column in shared)
        table = rows.drop(columns=shared).rename(columns=_short).to_string(index=False, float_format="{:.3g}".format)
        blocks.append(f"{header}\n{table}")
    return "\n\n".join(blocks)
