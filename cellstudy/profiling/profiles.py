"""Post-processing of well-level profiles and consensus profiles, with pycytominer.

A profile table has ``Metadata_*`` columns (at least ``Metadata_Plate`` and the
boolean ``Metadata_negcon``) and numeric feature columns (every other column).
:func:`postprocess` runs the steps below in this order; each is a named option
of :class:`PostProcessing` and a public function usable alone for an ablation:

1. :func:`variance_filter` - drop near-constant features (pycytominer
   ``variance_threshold``), measured on the rows the sphering is fit on.
2. :func:`sphere` - ZCA whitening fit on the negative controls (pycytominer
   ``Spherize``), so that control wells have identity covariance.
3. :func:`robustize_per_plate` - per plate, ``(x - median) / (1.4826 * MAD)``
   of that plate's negative controls (pycytominer ``RobustMAD``).
4. :func:`select_features` - pycytominer ``feature_select`` operations.

:func:`consensus` then takes the median per perturbation.

The study's choices: :data:`EMBEDDING_POSTPROCESSING` (steps 1-3) for learned
embeddings, the practice for Cell Painting embeddings; :data:`CLASSICAL_POSTPROCESSING`
(steps 3-4) for CellProfiler-style features, the CPJUMP1 paper's recipe
(``normalize_negcon`` with ``mad_robustize`` per plate, then batch-level
feature selection).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pycytominer import feature_select
from pycytominer.operations import RobustMAD, Spherize
from pycytominer.operations.variance_threshold import variance_threshold
from sklearn.decomposition import PCA
from tqdm import tqdm

from cellstudy.columns import (
    CELL_TYPE,
    GENE,
    GENETIC_MODALITIES,
    METADATA_PREFIX,
    MODALITY,
    N_PERTURBATIONS,
    NEGCON,
    PERT_TYPE,
    PLATE,
    SAMPLE,
    TIMEPOINT,
    WELL,
)
from cellstudy.data import cpjump1
from cellstudy.similarity import cosine_similarity

CONSENSUS_BY = (CELL_TYPE, MODALITY, TIMEPOINT, SAMPLE)
"""Columns that identify a perturbation under one condition (:func:`consensus`)."""
PAPER_FEATURE_SELECTION = ("frequency_threshold", "correlation_threshold", "drop_na_columns", "blocklist")
"""The CPJUMP1 paper's feature selection operations. Its ``variance_threshold`` (a
test of value frequency and uniqueness in the pycytominer of the time) is called
``frequency_threshold`` in pycytominer >= 1.3."""


@dataclass(frozen=True)
class PostProcessing:
    """Which post-processing steps :func:`postprocess` runs, and their settings.

    Parameters
    ----------
    variance_filter
        Drop features whose variance over the sphering's fit rows is below ``min_variance``.
    min_variance
        Variance threshold of the variance filter (absolute, in feature units).
    sphering
        Whiten the features with a transform fit on ``sphering_fit_on`` rows.
    sphering_method
        pycytominer ``Spherize`` method: ``"ZCA"``, ``"ZCA-cor"``, ``"PCA"`` or ``"PCA-cor"``.
    sphering_epsilon
        Regulariser added to the singular values before inversion.
    sphering_fit_on
        ``"negcon"``: fit on negative-control wells; ``"all"``: fit on all wells.
    robustize_per_plate
        MAD-robustize every plate to its negative controls.
    feature_selection
        pycytominer ``feature_select`` operations, applied last over all wells.
    correlation_threshold
        ``correlation_threshold`` operation: drop one of each feature pair correlated above this.
    na_cutoff
        ``drop_na_columns`` operation: drop features with a larger share of missing values.
    freq_cut, unique_cut
        ``frequency_threshold`` operation: second-to-first most common value ratio,
        and distinct-values-to-samples ratio, below which a feature is dropped.
    """

    variance_filter: bool = True
    min_variance: float = 1e-6
    sphering: bool = True
    sphering_method: str = "ZCA"
    sphering_epsilon: float = 1e-6
    sphering_fit_on: Literal["negcon", "all"] = "negcon"
    robustize_per_plate: bool = True
    feature_selection: tuple[str, ...] = ()
    correlation_threshold: float = 0.9
    na_cutoff: float = 0.05
    freq_cut: float = 0.05
    unique_cut: float = 0.01


EMBEDDING_POSTPROCESSING = PostProcessing()
"""The study's choice for learned embeddings: variance filter, ZCA sphering fit
on negative controls, per-plate MAD-robustize to negative controls."""
CLASSICAL_POSTPROCESSING = PostProcessing(
    variance_filter=False, sphering=False, robustize_per_plate=True, feature_selection=PAPER_FEATURE_SELECTION
)
"""The CPJUMP1 paper's recipe for CellProfiler features: per-plate MAD-robustize
to negative controls, then feature selection over the whole batch; no sphering."""
ORACLE_POSTPROCESSING = PostProcessing(variance_filter=False, sphering=False, robustize_per_plate=True)
"""For the simulator's planted latent phenotypes (a few interpretable axes): per-plate
MAD-robustize to negative controls only."""
METHOD_POSTPROCESSING = {"classical": CLASSICAL_POSTPROCESSING, "oracle": ORACLE_POSTPROCESSING}
"""The study's post-processing of the profiling methods that do not use :data:`EMBEDDING_POSTPROCESSING`
(see :func:`postprocessing_for`)."""


def postprocessing_for(method: str) -> PostProcessing:
    """The study's post-processing of a profiling method: :data:`METHOD_POSTPROCESSING` if listed there,
    else :data:`EMBEDDING_POSTPROCESSING` (learned embeddings, a random ViT, pixel statistics).
    """
    return METHOD_POSTPROCESSING.get(method, EMBEDDING_POSTPROCESSING)


def describe_steps(config: PostProcessing) -> list[str]:
    """The steps ``config`` switches on, in :func:`postprocess`'s order, each in words with its settings."""
    fit_rows = "negative-control wells" if config.sphering_fit_on == "negcon" else "all wells"
    steps = []
    if config.variance_filter:
        steps.append(
            f"variance filter (features with variance below {config.min_variance:g} on the {fit_rows} dropped)"
        )
    if config.sphering:
        steps.append(f"{config.sphering_method} sphering fit on the {fit_rows} (epsilon {config.sphering_epsilon:g})")
    if config.robustize_per_plate:
        steps.append("per-plate robust MAD normalisation to the plate's negative controls")
    if config.feature_selection:
        steps.append(
            f"feature selection ({', '.join(config.feature_selection)}; correlation threshold "
            f"{config.correlation_threshold:g}, missing-value cutoff {config.na_cutoff:g})"
        )
    return steps


def feature_columns(profiles: pd.DataFrame) -> list[str]:
    """The feature columns: every column not starting with :data:`METADATA_PREFIX`.

    Raises
    ------
    ValueError
        There is no feature column, or a feature column is not numeric (the message names it).
    """
    features = [column for column in profiles.columns if not str(column).startswith(METADATA_PREFIX)]
    if not features:
        raise ValueError("profiles have no feature column (every column starts with 'Metadata_')")
    non_numeric = [column for column in features if not pd.api.types.is_numeric_dtype(profiles[column])]
    if non_numeric:
        raise ValueError(
            f"feature column(s) {non_numeric[:5]} are not numeric; metadata columns need the 'Metadata_' prefix"
        )
    return features


def metadata_columns(profiles: pd.DataFrame) -> list[str]:
    """The ``Metadata_*`` columns, in table order."""
    return [column for column in profiles.columns if str(column).startswith(METADATA_PREFIX)]


def require_columns(table: pd.DataFrame, columns: Iterable[str], name: str = "profiles") -> None:
    """Raise a ``ValueError`` naming ``name`` and the ``columns`` that ``table`` lacks, if any."""
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{name} lack column(s) {missing}")


def negcon_mask(profiles: pd.DataFrame) -> pd.Series:
    """Boolean mask of negative-control rows, checking that ``Metadata_negcon`` exists and is boolean."""
    require_columns(profiles, [NEGCON])
    mask = profiles[NEGCON]
    if not pd.api.types.is_bool_dtype(mask):
        raise ValueError(
            f"column {NEGCON!r} must be boolean (True for negative controls), got dtype {mask.dtype} with values "
            f"{sorted(map(str, mask.dropna().unique()))[:5]}; convert it, e.g. with .astype(bool)"
        )
    return mask


def _fit_rows(profiles: pd.DataFrame, fit_on: Literal["negcon", "all"]) -> pd.DataFrame:
    """The rows a transform is fit on: negative controls or all rows."""
    if fit_on == "all":
        return profiles
    if fit_on != "negcon":
        raise ValueError(f"fit_on must be 'negcon' or 'all', got {fit_on!r}")
    rows = profiles[negcon_mask(profiles)]
    if rows.empty:
        raise ValueError(f"no negative-control rows ({NEGCON} is never True) to fit on")
    return rows


def _with_features(profiles: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``profiles``' metadata with ``features`` (same index) as the new feature columns."""
    return pd.concat([profiles[metadata_columns(profiles)], features], axis="columns")


def variance_filter(
    profiles: pd.DataFrame, min_variance: float = 1e-6, fit_on: Literal["negcon", "all"] = "negcon"
) -> pd.DataFrame:
    """Drop features whose variance over the ``fit_on`` rows is below ``min_variance``.

    Measured on the rows the sphering is fit on, so that no remaining feature is
    constant there (a constant feature makes the sphering undefined).
    """
    features = feature_columns(profiles)
    dropped = variance_threshold(_fit_rows(profiles, fit_on), features=features, min_variance=min_variance)
    if len(dropped) == len(features):
        raise ValueError(f"every feature has variance below {min_variance} on the {fit_on} rows")
    return profiles.drop(columns=dropped)


def sphere(
    profiles: pd.DataFrame,
    fit_on: Literal["negcon", "all"] = "negcon",
    method: str = "ZCA",
    epsilon: float = 1e-6,
) -> pd.DataFrame:
    """Whiten the features with a pycytominer ``Spherize`` transform fit on ``fit_on`` rows.

    After ZCA sphering fit on negative controls, the controls have (nearly,
    up to ``epsilon``) identity covariance and the features keep their names.
    """
    features = feature_columns(profiles)
    spherize = Spherize(epsilon=epsilon, center=True, method=method).fit(_fit_rows(profiles, fit_on)[features])
    whitened = pd.DataFrame(
        spherize.transform(profiles[features]).to_numpy(), index=profiles.index, columns=spherize.columns
    )
    return _with_features(profiles, whitened)


def _without_spread(scalers: Mapping[str, RobustMAD], dropped: set[str], limit: int = 5) -> str:
    """Names the features whose negative-control MAD is zero or missing, with the plates where it is."""
    named = []
    for feature in sorted(dropped)[:limit]:
        plates = sorted(str(plate) for plate, scaler in scalers.items() if not scaler.mad[feature] > 0)
        named.append(f"{feature} (plates {plates})")
    more = f" and {len(dropped) - limit} more" if len(dropped) > limit else ""
    return f"{len(dropped)} feature(s) with zero or missing negative-control MAD: {'; '.join(named)}{more}"


def robustize_per_plate(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per plate, ``(x - median) / (1.4826 * MAD)`` of that plate's negative controls.

    Features whose negative-control MAD is zero or missing on any plate are dropped, with a warning that
    names them and those plates: they carry no variation to scale by and would otherwise become ``±x / 0``.

    Raises
    ------
    ValueError
        A plate has no negative-control well (the message names it), or every
        feature has zero MAD on some plate.
    """
    require_columns(profiles, [PLATE])
    features = feature_columns(profiles)
    negcon = negcon_mask(profiles)
    without = sorted(set(profiles[PLATE]) - set(profiles.loc[negcon, PLATE]))
    if without:
        raise ValueError(f"plate(s) {without} have no negative-control well to robustize to")
    plates = profiles.groupby(PLATE, sort=False).groups
    scalers = {
        plate: RobustMAD(epsilon=0.0).fit(profiles.loc[rows[negcon.loc[rows].to_numpy()], features])
        for plate, rows in tqdm(plates.items(), desc="robustize plates", leave=False)
    }
    keep = [feature for feature in features if all(scaler.mad[feature] > 0 for scaler in scalers.values())]
    if not keep:
        raise ValueError("every feature has zero negative-control MAD on some plate")
    if len(keep) < len(features):
        warnings.warn(f"dropped {_without_spread(scalers, set(features) - set(keep))}", stacklevel=3)
    scaled = pd.concat([scalers[plate].transform(profiles.loc[rows, keep])[keep] for plate, rows in plates.items()])
    return _with_features(profiles, scaled.loc[profiles.index])


def select_features(profiles: pd.DataFrame, operations: Sequence[str], config: PostProcessing) -> pd.DataFrame:
    """Apply pycytominer ``feature_select`` ``operations`` over all rows, with ``config``'s thresholds."""
    features = feature_columns(profiles)
    return feature_select(
        profiles,
        features=features,
        operation=list(operations),
        corr_threshold=config.correlation_threshold,
        na_cutoff=config.na_cutoff,
        freq_cut=config.freq_cut,
        unique_cut=config.unique_cut,
        min_variance=config.min_variance,
    )


def drop_nonfinite_rows(profiles: pd.DataFrame, how: Literal["all", "any"]) -> pd.DataFrame:
    """Drop profiles with ``all`` (e.g. a well without cells) or ``any`` non-finite feature, warning with their wells."""
    values = profiles[feature_columns(profiles)].to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    drop = bad.all(axis=1) if how == "all" else bad.any(axis=1)
    if drop.any():
        named = profiles.loc[drop, [c for c in (PLATE, WELL) if c in profiles.columns]]
        warnings.warn(
            f"dropped {drop.sum()} profile(s) with {how} features missing or infinite: "
            f"{named.head(5).to_dict('records')}",
            stacklevel=2,
        )
    return profiles[~drop]


def postprocess(profiles: pd.DataFrame, config: PostProcessing = EMBEDDING_POSTPROCESSING) -> pd.DataFrame:
    """Run the steps ``config`` switches on, in the module's order; the index and metadata are kept.

    Profiles without any measured feature (wells without cells) are dropped first, and profiles
    left with any missing feature after the steps are dropped last; both with a warning naming them.
    The result is one contiguous block of memory (pycytominer's steps leave a column-wise fragmented frame).
    """
    profiles = drop_nonfinite_rows(profiles, "all")
    if config.variance_filter:
        profiles = variance_filter(profiles, config.min_variance, config.sphering_fit_on)
    if config.sphering:
        profiles = sphere(profiles, config.sphering_fit_on, config.sphering_method, config.sphering_epsilon)
    if config.robustize_per_plate:
        profiles = robustize_per_plate(profiles)
    if config.feature_selection:
        profiles = select_features(profiles, config.feature_selection, config)
    return drop_nonfinite_rows(profiles, "any").copy()


def consensus(profiles: pd.DataFrame, by: Sequence[str] = CONSENSUS_BY) -> pd.DataFrame:
    """Median profile per perturbation: one row per distinct ``by`` value.

    Metadata columns that are constant within every group (names, targets,
    control type) are kept; those that vary (plate, well) are dropped.

    Raises
    ------
    ValueError
        A ``by`` column is absent or has missing values (the message names it).
    """
    by = list(by)
    require_columns(profiles, by)
    missing = [column for column in by if profiles[column].isna().any()]
    if missing:
        raise ValueError(f"consensus key column(s) {missing} have missing values")
    features = feature_columns(profiles)
    groups = profiles.groupby(by, sort=True)
    others = [column for column in metadata_columns(profiles) if column not in by]
    constant = groups[others].nunique(dropna=False).le(1).all()
    metadata = groups[[column for column in others if constant[column]]].first()
    return metadata.join(groups[features].median()).reset_index()


def standardise(profiles: pd.DataFrame) -> pd.DataFrame:
    """Each feature centred and scaled to unit standard deviation across the profiles (constant features dropped).

    For a handful of profiles without negative controls (e.g. the ten real fields), where
    :func:`robustize_per_plate` has nothing to normalise to.
    """
    features = profiles[feature_columns(profiles)]
    spread = features.std()
    features = features.loc[:, spread > 0]
    return _with_features(profiles, (features - features.mean()) / spread[spread > 0])


def cosine_similarity_matrix(profiles: pd.DataFrame) -> np.ndarray:
    """Cosine similarity between every pair of profiles (rows)."""
    return cosine_similarity(profiles[feature_columns(profiles)].to_numpy(dtype=float))


def treatment_profiles(consensus: pd.DataFrame) -> pd.DataFrame:
    """Rows that are neither negative controls nor empty wells, checked to be one per perturbation and condition."""
    keys = [CELL_TYPE, MODALITY, TIMEPOINT, SAMPLE]
    require_columns(consensus, [*keys, NEGCON], "consensus profiles")
    repeated = consensus[consensus.duplicated(keys, keep=False)]
    if not repeated.empty:
        raise ValueError(
            f"profiles have several rows per perturbation and condition, e.g. {repeated[keys].iloc[0].to_dict()}; "
            "pass consensus profiles (cellstudy.profiling.profiles.consensus)"
        )
    keep = ~consensus[NEGCON].eq(True) & consensus[SAMPLE].notna()
    if PERT_TYPE in consensus.columns:
        keep &= consensus[PERT_TYPE] != cpjump1.EMPTY_WELL
    return consensus[keep]


def gene_profiles(consensus: pd.DataFrame, modality: str) -> pd.DataFrame:
    """One profile per gene, cell type and time point of a genetic ``modality``.

    The gene's profile is the mean of the consensus profiles of its
    perturbations: for CRISPR, of its guides (two per gene for most CPJUMP1
    genes; a failed guide dilutes the profile but leaves its direction); for
    ORF, the ORF's own (one per gene in CPJUMP1). Negative controls and rows
    without a gene are left out.

    Returns
    -------
    ``Metadata_cell_type``, ``Metadata_modality``, ``Metadata_timepoint``,
    ``Metadata_gene``, ``Metadata_n_perturbations`` and the feature columns.
    """
    if modality not in GENETIC_MODALITIES:
        raise ValueError(f"genetic modality must be one of {GENETIC_MODALITIES}, got {modality!r}")
    features = feature_columns(consensus)
    genetic = treatment_profiles(consensus)
    genetic = genetic[genetic[MODALITY] == modality]
    require_columns(genetic, [GENE], f"{modality} consensus profiles")
    genetic = genetic[genetic[GENE].notna()]
    groups = genetic.groupby([CELL_TYPE, MODALITY, TIMEPOINT, GENE], sort=True)
    counts = groups.size().rename(N_PERTURBATIONS)
    return pd.concat([counts, groups[features].mean()], axis=1).reset_index()


def plate_pca(tables: Mapping[str, pd.DataFrame], stage: str) -> pd.DataFrame:
    """The first two principal components of each method's standardised well profiles (wells with a missing feature
    left out), with each well's plate and whether it is a negative control; ``stage`` labels the rows.
    """
    rows = []
    for method, table in tables.items():
        values = drop_nonfinite_rows(table, "any")
        features = values[feature_columns(values)].to_numpy(dtype=float)
        scaled = (features - features.mean(axis=0)) / np.where(features.std(axis=0) > 0, features.std(axis=0), 1)
        components = PCA(n_components=2, random_state=0).fit_transform(scaled)
        rows.append(
            pd.DataFrame(
                {
                    "method": method,
                    "stage": stage,
                    "PC1": components[:, 0],
                    "PC2": components[:, 1],
                    "plate": values[PLATE].to_numpy(),
                    "negcon": values[NEGCON].to_numpy(),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)
