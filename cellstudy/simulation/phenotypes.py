"""Latent morphological phenotypes of CPJUMP1 perturbations, with planted ground truth.

A phenotype is a vector over the interpretable morphology axes of :data:`AXES`
(nuclear size, mitochondrial fragmentation, cell count, ...); the zero vector is
an unperturbed cell. :mod:`cellstudy.simulation.simulate` renders cells from it, each axis
moving one rendering parameter by ``exp(gain * value)`` (or ``gain * value`` on
the logit scale for fractions). The axes come in two kinds: the
:data:`GENERIC_AXES` of stress responses (cell count, nuclear size and
intensity, cell size, mitotic arrest, multinucleation), rendered strongly, and
the organelle axes (mitochondria, ER, Golgi, actin, nucleoli, RNA, chromatin,
shape), rendered subtly: one unit is a change that moves many cell-averaged
features on a generic axis and a finer, local one on an organelle axis.

The generative model (knobs in :class:`PhenotypeConfig`):

- **Genes**: a share of genes has a visible knockout phenotype, a sparse random
  vector (a few organelle axes) of random norm; the rest have none. Each cell
  type sees a correlated version of it.
- **Off-targets** (CRISPR cutting and guide-specific DNA-damage responses,
  compound toxicity) move the generic axes. So a profile that weighs
  cell-averaged stress features heavily, as CellProfiler profiles do, finds
  replicates easily but matches perturbations by their shared target poorly;
  the planted gene biology is there, on the organelle axes, to be found.
- **CRISPR guides**: the gene's phenotype plus a guide-specific off-target
  phenotype (off-target cutting and guide-specific DNA-damage responses), both
  times the guide's efficiency (some guides fail and have none), so that two
  guides of one gene agree only in their on-target part.
- **ORFs**: weak, noisy, slightly positively correlated with the knockout.
- **Compounds**: a random mix of their annotated targets' inhibition phenotypes
  (targets restricted to the simulated genes) plus an off-target component; for
  a share of compounds (polypharmacology) the mix comes from another,
  unannotated gene instead, as BI-2536's phenotype is PLK1's. A gene's
  inhibition phenotype, shared by every compound hitting it, is only partly
  correlated with its knockout (acute loss of activity differs from days
  without the protein), so compounds match their sisters more easily than
  their target's guides and ORF.
- **Negative controls**: zero.

Every entity draws from its own random stream, keyed by the seed and its name,
so a gene's phenotype does not depend on which other genes are simulated.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellstudy.columns import CELL_TYPE, GENE, MODALITY, NEGCON, SAMPLE, TARGET_LIST


@dataclass(frozen=True)
class PhenotypeAxis:
    """One axis of the latent phenotype space.

    Attributes
    ----------
    name
        Column suffix used in the ground-truth tables.
    gain
        Rendering scale of one unit: the parameter is multiplied by ``exp(gain)``
        (log-scale axes) or its logit shifted by ``gain`` (fraction axes).
    description
        What the renderer changes.
    """

    name: str
    gain: float
    description: str


AXES = (
    PhenotypeAxis("nuclear_size", 0.225, "log nucleus radii"),
    PhenotypeAxis("nuclear_intensity", 0.375, "log Hoechst intensity of nuclei"),
    PhenotypeAxis("chromatin_texture", 0.24, "log amplitude of chromatin granularity (DNA)"),
    PhenotypeAxis("cell_size", 0.225, "log cell-body radii"),
    PhenotypeAxis("cell_elongation", 0.15, "log aspect ratio of the cell body"),
    PhenotypeAxis("mito_fragmentation", 0.6, "logit of the punctate (vs tubular) share of mitochondria"),
    PhenotypeAxis("mito_mass", 0.15, "log mitochondrial stain intensity and perinuclear extent"),
    PhenotypeAxis("er_spread", 0.18, "log decay length of ER density away from the nucleus"),
    PhenotypeAxis("golgi_compaction", 0.21, "minus log angular and radial extent of the Golgi"),
    PhenotypeAxis("actin_fibres", 0.3, "log stress-fibre strength (AGP)"),
    PhenotypeAxis("nucleoli", 0.18, "log nucleolar size and RNA intensity"),
    PhenotypeAxis("rna_intensity", 0.15, "log cytoplasmic RNA intensity"),
    PhenotypeAxis("cell_count", 0.525, "log cell density (negative: toxicity)"),
    PhenotypeAxis("mitotic_arrest", 1.5, "logit of the share of rounded mitotic cells"),
    PhenotypeAxis("multinucleation", 1.5, "logit of the share of binucleate cells"),
)
"""The latent morphology axes, in vector order. Gains: 1.5 times (generic axes) and 0.6 times (organelle
axes) those at which one unit was a clearly visible change, the split calibrated on the classical baseline
(with :class:`PhenotypeConfig`) so that it retrieves replicates as CellProfiler did in CPJUMP1 while the
planted gene biology stays mostly on the axes it measures least well."""
AXIS_NAMES = tuple(axis.name for axis in AXES)
"""Names of :data:`AXES`, in vector order."""
AXIS_GAINS = np.array([axis.gain for axis in AXES], dtype=np.float32)
"""Gains of :data:`AXES`, in vector order."""
N_AXES = len(AXES)
"""Dimension of the latent phenotype space."""
GENERIC_AXES = ("nuclear_size", "nuclear_intensity", "cell_size", "cell_count", "mitotic_arrest", "multinucleation")
"""Axes of generic stress responses (DNA damage, toxicity, cell-cycle arrest) that off-target effects move."""
GENERIC_AXIS_INDEX = np.array([AXIS_NAMES.index(name) for name in GENERIC_AXES])
"""Positions of :data:`GENERIC_AXES` in the latent vector."""
SPECIFIC_AXIS_INDEX = np.array([i for i, name in enumerate(AXIS_NAMES) if name not in GENERIC_AXES])
"""Positions of the other, organelle-specific axes."""
LATENT_PREFIX = "Latent_"
"""Column prefix of latent phenotype values in tables (``Latent_nuclear_size``, ...)."""


@dataclass(frozen=True)
class PhenotypeConfig:
    """Strength and noise of the perturbation phenotypes (all latent norms in axis units).

    The defaults are calibrated so that CellProfiler-style features of the
    default simulated screen (:func:`cellstudy.features.classical.profile_fields`,
    U2OS, later time point) retrieve about as often as CellProfiler did in the
    CPJUMP1 paper (fraction retrieved with the paper's significance test,
    :data:`cellstudy.evaluation.significance.PAPER`). Calibrated on the
    classical baseline only; each knob's target is named below (measurements:
    book, Decisions and measurements).

    Attributes
    ----------
    visible_fraction
        Share of genes whose knockout has a visible phenotype (0.8: CRISPR
        replicate retrieval 0.5-0.7, most knockouts replicable as in CPJUMP1).
    axes_per_gene
        Mean number of axes a visible gene phenotype moves (at least one).
    gene_norm
        Median norm of a visible gene phenotype (also of its inhibition phenotype).
        With the organelle axes' gains, CRISPR and ORF replicate retrieval.
    gene_norm_sd
        Log-normal spread of that norm across genes.
    cell_type_correlation
        Correlation of a gene's phenotype between two cell types.
    crispr_scale
        Multiplier of the gene phenotype for a fully efficient guide (with
        ``guide_off_target_norm``: CRISPR replicate retrieval 0.5-0.7 and sister
        matching 0.05-0.25).
    guide_failure_fraction
        Share of guides with no effect at all.
    guide_efficiency_beta
        Beta(a, b) distribution of the efficiency of the other guides (mean 0.6:
        CRISPR replicate retrieval 0.5-0.7).
    guide_off_target_norm
        Norm of a fully efficient guide's own off-target phenotype (0: guides of
        a gene differ only in efficiency). On the strongly rendered generic axes
        it dominates the classical profile of a guide, which keeps CRISPR sister
        matching at 0.05-0.25 there and leaves it high for the oracle.
    orf_visible_fraction
        Share of ORFs with a visible over-expression phenotype.
    orf_norm
        Norm of a visible ORF phenotype (weak; ORF replicate retrieval 0.05-0.4).
    orf_knockout_correlation
        Cosine between an ORF phenotype and its gene's knockout phenotype.
    inhibition_knockout_correlation
        Cosine between a gene's inhibition phenotype (what its compounds share)
        and its knockout phenotype; both have the same norm. Above one half (acute
        inhibition and knockout share most of their biology); with the organelle
        axes' low gains classical compound-gene matching stays at 0-0.03 (CRISPR)
        and 0-0.08 (ORF).
    compound_norm_scale
        Multiplier of the target-driven compound phenotype.
    compound_potency_sd
        Log-normal spread of compound potency.
    off_target_norm
        Norm of each compound's off-target phenotype (with
        ``compound_norm_scale``: compound replicate retrieval 0.7-0.95 and
        compound sister matching 0.05-0.25 for the classical features).
    polypharmacology_fraction
        Share of compounds whose phenotype comes from an unannotated gene.
    early_timepoint_strength
        Phenotype multiplier at each modality's shorter time point.
    separate_axes
        Off-target phenotypes on :data:`GENERIC_AXES` only and gene phenotypes
        (knockout, inhibition, over-expression) on the organelle axes only;
        ``False`` draws both on all axes (then classical features match
        perturbations about as well as the oracle does).
    """

    visible_fraction: float = 0.8
    axes_per_gene: float = 3.0
    gene_norm: float = 2.0
    gene_norm_sd: float = 0.5
    cell_type_correlation: float = 0.7
    crispr_scale: float = 0.8
    guide_failure_fraction: float = 0.1
    guide_efficiency_beta: tuple[float, float] = (3.0, 2.0)
    guide_off_target_norm: float = 2.0
    orf_visible_fraction: float = 0.5
    orf_norm: float = 1.6
    orf_knockout_correlation: float = 0.6
    inhibition_knockout_correlation: float = 0.6
    compound_norm_scale: float = 1.4
    compound_potency_sd: float = 0.3
    off_target_norm: float = 0.9
    polypharmacology_fraction: float = 0.2
    early_timepoint_strength: float = 0.7
    separate_axes: bool = True


def keyed_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A random generator determined by ``seed`` and ``keys`` alone (names are hashed with CRC-32)."""
    words = [zlib.crc32(key.encode()) if isinstance(key, str) else int(key) for key in keys]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to norm 1 (the zero vector stays zero)."""
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else np.zeros_like(vector)


def sparse_direction(rng: np.random.Generator, axes_per_gene: float, axes: np.ndarray | None = None) -> np.ndarray:
    """A unit vector on ``1 + Poisson(axes_per_gene - 1)`` random axes among ``axes`` (default all; at most all)."""
    candidates = np.arange(N_AXES) if axes is None else axes
    n_active = min(1 + rng.poisson(max(axes_per_gene - 1.0, 0.0)), len(candidates))
    direction = np.zeros(N_AXES)
    direction[rng.choice(candidates, n_active, replace=False)] = rng.standard_normal(n_active)
    return unit(direction)


def off_target_direction(rng: np.random.Generator, config: PhenotypeConfig) -> np.ndarray:
    """Direction of an off-target phenotype: sparse, on :data:`GENERIC_AXES` if ``config.separate_axes``."""
    return sparse_direction(rng, config.axes_per_gene, GENERIC_AXIS_INDEX if config.separate_axes else None)


def gene_direction(rng: np.random.Generator, config: PhenotypeConfig) -> np.ndarray:
    """Direction of a gene's own phenotype: sparse, on the organelle axes if ``config.separate_axes``."""
    return sparse_direction(rng, config.axes_per_gene, SPECIFIC_AXIS_INDEX if config.separate_axes else None)


def correlated_variant(rng: np.random.Generator, vector: np.ndarray, correlation: float) -> np.ndarray:
    """A vector of the same norm and support as ``vector`` at cosine ``correlation`` to it.

    A phenotype on a single axis has no other direction on its support and is returned unchanged.
    """
    direction = unit(vector)
    noise = np.where(vector != 0, rng.standard_normal(N_AXES), 0.0)
    orthogonal = unit(noise - (noise @ direction) * direction)
    if not orthogonal.any():
        return vector
    return np.linalg.norm(vector) * (correlation * direction + np.sqrt(1.0 - correlation**2) * orthogonal)


def mixed_direction(reference: np.ndarray, own: np.ndarray, correlation: float) -> np.ndarray:
    """A unit vector at cosine ``correlation`` to the unit (or zero) vector ``reference``, the rest along ``own``.

    The part orthogonal to ``reference`` follows ``own`` (made orthogonal to it);
    a zero ``reference`` gives ``own``'s direction, an ``own`` parallel to it gives ``reference``.
    """
    orthogonal = unit(own - (own @ reference) * reference)
    if not reference.any():
        return unit(own)
    if not orthogonal.any():
        return reference
    return unit(correlation * reference + np.sqrt(1.0 - correlation**2) * orthogonal)


def gene_phenotype(
    gene: str, cell_type: str, config: PhenotypeConfig, seed: int, force_visible: bool = False
) -> np.ndarray:
    """The knockout phenotype of ``gene`` in ``cell_type`` (zero if the gene has no visible phenotype).

    ``force_visible`` draws a phenotype even for genes that have none, for the
    unannotated genes that drive polypharmacology compounds.
    """
    rng = keyed_rng(seed, "gene", gene)
    visible = rng.random() < config.visible_fraction
    base = config.gene_norm * np.exp(config.gene_norm_sd * rng.standard_normal()) * gene_direction(rng, config)
    if not (visible or force_visible):
        return np.zeros(N_AXES)
    return correlated_variant(keyed_rng(seed, "gene", gene, cell_type), base, config.cell_type_correlation)


def guide_efficiency(guide: str, config: PhenotypeConfig, seed: int) -> float:
    """Knockout efficiency of one sgRNA: 0 for failed guides, else Beta-distributed."""
    rng = keyed_rng(seed, "guide", guide)
    failed = rng.random() < config.guide_failure_fraction
    return 0.0 if failed else float(rng.beta(*config.guide_efficiency_beta))


def guide_off_target(guide: str, cell_type: str, config: PhenotypeConfig, seed: int) -> np.ndarray:
    """A fully efficient guide's own off-target phenotype: a sparse random vector of norm ``guide_off_target_norm``."""
    rng = keyed_rng(seed, "guide", guide, "off-target")
    vector = config.guide_off_target_norm * off_target_direction(rng, config)
    return correlated_variant(keyed_rng(seed, "guide", guide, cell_type), vector, config.cell_type_correlation)


def orf_phenotype(orf: str, gene: str, cell_type: str, config: PhenotypeConfig, seed: int) -> np.ndarray:
    """Over-expression phenotype: weak, noisy, cosine ``orf_knockout_correlation`` with the knockout."""
    rng = keyed_rng(seed, "orf", orf)
    if rng.random() >= config.orf_visible_fraction:
        return np.zeros(N_AXES)
    own = gene_direction(rng, config)
    knockout = unit(gene_phenotype(gene, cell_type, config, seed))
    return config.orf_norm * mixed_direction(knockout, own, config.orf_knockout_correlation)


def inhibition_phenotype(
    gene: str, cell_type: str, config: PhenotypeConfig, seed: int, force_visible: bool = False
) -> np.ndarray:
    """Phenotype of inhibiting ``gene``'s product with a compound: the knockout's norm (zero if it has none),
    at cosine ``inhibition_knockout_correlation`` to the knockout; ``force_visible`` as :func:`gene_phenotype`.
    """
    knockout = gene_phenotype(gene, cell_type, config, seed, force_visible)
    own = gene_direction(keyed_rng(seed, "inhibition", gene), config)
    return np.linalg.norm(knockout) * mixed_direction(unit(knockout), own, config.inhibition_knockout_correlation)


@dataclass(frozen=True)
class CompoundPhenotype:
    """A compound's phenotype and where it comes from.

    Attributes
    ----------
    vector
        The latent phenotype.
    target_weights
        Weight of each simulated annotated target in the target-driven part.
    driver
        The unannotated gene behind a polypharmacology compound, else ``None``.
    """

    vector: np.ndarray
    target_weights: dict[str, float]
    driver: str | None


def compound_phenotype(
    compound: str,
    annotated_targets: Sequence[str],
    genes: Sequence[str],
    cell_type: str,
    config: PhenotypeConfig,
    seed: int,
    all_genes: Sequence[str],
) -> CompoundPhenotype:
    """Phenotype of a compound annotated to ``annotated_targets``.

    The target-driven part mixes the inhibition phenotypes
    (:func:`inhibition_phenotype`) of the annotated targets among the simulated
    ``genes``; a polypharmacology compound's comes instead from a driver drawn
    from ``all_genes`` outside its annotation, with a visible phenotype forced.
    """
    rng = keyed_rng(seed, "compound", compound)
    potency = config.compound_norm_scale * np.exp(config.compound_potency_sd * rng.standard_normal())
    off_target = config.off_target_norm * off_target_direction(rng, config)
    off_target = correlated_variant(
        keyed_rng(seed, "compound", compound, cell_type), off_target, config.cell_type_correlation
    )
    polypharmacology = rng.random() < config.polypharmacology_fraction
    targets = [gene for gene in annotated_targets if gene in set(genes)]
    weights = rng.dirichlet(np.ones(len(targets))) if targets else np.array([])
    candidates = sorted(set(all_genes) - set(annotated_targets))
    if polypharmacology and candidates:
        driver = str(rng.choice(candidates))
        on_target = inhibition_phenotype(driver, cell_type, config, seed, force_visible=True)
        return CompoundPhenotype(potency * on_target + off_target, dict.fromkeys(targets, 0.0), driver)
    on_target = sum(
        (w * inhibition_phenotype(g, cell_type, config, seed) for g, w in zip(targets, weights)), np.zeros(N_AXES)
    )
    return CompoundPhenotype(potency * on_target + off_target, dict(zip(targets, map(float, weights))), None)


def latent_columns() -> list[str]:
    """Table columns of the latent axes: :data:`LATENT_PREFIX` + axis name."""
    return [LATENT_PREFIX + name for name in AXIS_NAMES]


def perturbation_phenotypes(
    perturbations: pd.DataFrame,
    genes: Sequence[str],
    cell_types: Sequence[str],
    config: PhenotypeConfig,
    seed: int,
    all_genes: Sequence[str],
) -> pd.DataFrame:
    """Latent phenotype of every perturbation in every cell type (at full time-point strength).

    Parameters
    ----------
    perturbations
        One row per perturbation with ``Metadata_broad_sample``,
        ``Metadata_modality`` (compound, crispr, orf), ``Metadata_gene``,
        ``Metadata_target_list`` (``|``-separated) and ``Metadata_negcon``.
    genes
        The simulated genes; compound targets outside them are ignored.
    cell_types
        Cell types to draw phenotypes for.
    all_genes
        Genes a polypharmacology compound's driver is drawn from.

    Returns
    -------
    One row per perturbation and cell type: the input columns, ``Metadata_cell_type``,
    ``guide_efficiency`` (CRISPR), ``targets_simulated`` and ``driver_gene``
    (compounds), ``phenotype_norm`` and the :func:`latent_columns`.

    Raises
    ------
    ValueError
        A modality is unknown or a CRISPR/ORF row lacks its gene (the message names the sample).
    """
    rows = []
    for record in perturbations.to_dict("records"):
        for cell_type in cell_types:
            extra, vector = _phenotype_of(record, genes, cell_type, config, seed, all_genes)
            rows.append(
                {
                    **record,
                    CELL_TYPE: cell_type,
                    **extra,
                    "phenotype_norm": float(np.linalg.norm(vector)),
                    **dict(zip(latent_columns(), vector)),
                }
            )
    return pd.DataFrame(rows)


def _annotated_targets(record: Mapping) -> list[str]:
    """The ``|``-separated ``Metadata_target_list`` of a row as a list (empty if missing)."""
    targets = record[TARGET_LIST]
    return targets.split("|") if isinstance(targets, str) and targets else []


def _phenotype_of(
    record: Mapping, genes: Sequence[str], cell_type: str, config: PhenotypeConfig, seed: int, all_genes: Sequence[str]
) -> tuple[dict, np.ndarray]:
    """(extra ground-truth columns, latent vector) of one perturbation row."""
    sample, modality = record[SAMPLE], record[MODALITY]
    extra = {"guide_efficiency": np.nan, "targets_simulated": "", "driver_gene": ""}
    if record[NEGCON]:
        return extra, np.zeros(N_AXES)
    if modality == "compound":
        compound = compound_phenotype(sample, _annotated_targets(record), genes, cell_type, config, seed, all_genes)
        return {
            **extra,
            "targets_simulated": "|".join(compound.target_weights),
            "driver_gene": compound.driver or "",
        }, compound.vector
    gene = record[GENE]
    if not isinstance(gene, str):
        raise ValueError(f"{modality} perturbation {sample!r} has no Metadata_gene")
    if modality == "crispr":
        efficiency = guide_efficiency(sample, config, seed)
        on_target = config.crispr_scale * gene_phenotype(gene, cell_type, config, seed)
        vector = efficiency * (on_target + guide_off_target(sample, cell_type, config, seed))
        return {**extra, "guide_efficiency": efficiency}, vector
    if modality == "orf":
        return extra, orf_phenotype(sample, gene, cell_type, config, seed)
    raise ValueError(f"perturbation {sample!r}: unknown modality {modality!r}")


TRUTH_COLUMNS = [
    CELL_TYPE,
    SAMPLE,
    GENE,
    "annotated",
    "shares_phenotype",
    "weight",
    "cosine",
]
"""Columns of :func:`compound_gene_truth`."""


def compound_gene_truth(
    perturbations: pd.DataFrame,
    genes: Sequence[str],
    cell_types: Sequence[str],
    config: PhenotypeConfig,
    seed: int,
    all_genes: Sequence[str],
) -> pd.DataFrame:
    """Which compound–gene pairs truly share a phenotype, next to which are annotated.

    Takes the arguments of :func:`perturbation_phenotypes` and returns one row
    per cell type, compound and gene that is either an annotated target among
    the simulated ``genes`` or the compound's polypharmacology driver (when
    simulated), with :data:`TRUTH_COLUMNS`: ``annotated``; ``shares_phenotype``
    (the gene's inhibition phenotype drives the compound's: a visible annotated
    target of a compound without polypharmacology, or the driver); ``weight``
    (the gene's share of the target-driven part); ``cosine`` (between the
    compound's and the gene's knockout phenotypes, 0 if either is zero).
    """
    compounds = perturbations[(perturbations[MODALITY] == "compound") & ~perturbations[NEGCON].astype(bool)]
    rows = []
    for record in compounds.to_dict("records"):
        sample = record[SAMPLE]
        for cell_type in cell_types:
            compound = compound_phenotype(sample, _annotated_targets(record), genes, cell_type, config, seed, all_genes)
            weights = dict(compound.target_weights)
            if compound.driver in set(genes):
                weights[compound.driver] = 1.0
            for gene, weight in weights.items():
                knockout = gene_phenotype(gene, cell_type, config, seed)
                rows.append(
                    {
                        CELL_TYPE: cell_type,
                        SAMPLE: sample,
                        GENE: gene,
                        "annotated": gene in compound.target_weights,
                        "shares_phenotype": bool(weight > 0 and knockout.any()),
                        "weight": weight,
                        "cosine": float(unit(compound.vector) @ unit(knockout)),
                    }
                )
    return pd.DataFrame(rows, columns=TRUTH_COLUMNS)
