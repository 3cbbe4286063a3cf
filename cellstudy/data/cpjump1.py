"""The CPJUMP1 experimental design as tidy tables.

CPJUMP1 (Chandrasekaran et al. 2024) perturbs 160 genes by CRISPR knockout and
ORF over-expression, and 306 compounds that target them, on 384-well plates of
U2OS and A549 cells imaged at two time points per modality. The design comes
as separate files in ``<data_root>/cpjump1/metadata`` (see the data README):
per-modality perturbation metadata, one plate map per modality (well ->
``broad_sample``), ``barcode_platemap.csv`` (plate -> plate map) and
``experiment-metadata.tsv`` (plate -> modality, cell type, time point, ...).

:func:`well_table` joins them into one row per well with the ``Metadata_*``
columns that pycytominer and copairs expect. Conventions, as in the published
profiles: a compound-plate well without a compound holds only solvent and is
named after it (``"DMSO"``, the negative control); a genetic-plate well without
a perturbation is ``"empty"`` (``Metadata_pert_type == "empty"``); genetic
perturbations use their ``broad_sample`` as ``Metadata_pert_iname``. Values
that do not apply (a compound's gene, a treatment's control type) are missing
(NaN).

Compound targets come from the ``..._additional_annotations`` file, as in the
paper's analysis: its gene symbols are current, so they match the CRISPR and
ORF gene names (the plain compound file still says e.g. ``GUCY1B3`` for the
perturbed gene ``GUCY1B1``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cellstudy.columns import (
    ANOMALY,
    CELL_TYPE,
    COL,
    CONTROL_TYPE,
    GENE,
    METADATA_PREFIX,
    MOA_LIST,
    MODALITY,
    NAME,
    NEGCON,
    PERT_TYPE,
    PLATE,
    ROW,
    SAMPLE,
    TARGET_LIST,
    TIMEPOINT,
    WELL,
)
from cellstudy.data.sources import DATASET, data_root

MODALITIES = ("compound", "crispr", "orf")
"""Perturbation modalities, as spelled in ``experiment-metadata.tsv``."""
COMPOUND_FILE = "JUMP-Target-1_compound_metadata_additional_annotations.tsv"
"""Compound metadata with the target and MoA annotations the paper matched on."""
CRISPR_FILE = "JUMP-Target-1_crispr_metadata.tsv"
"""sgRNA metadata: one row per guide."""
ORF_FILE = "JUMP-Target-1_orf_metadata.tsv"
"""ORF metadata: one row per ORF construct."""
PLATEMAP_NAME = "JUMP-Target-1_{modality}_platemap"
"""Plate map name per modality; the plate map file is this name plus ``.tsv``."""
EXPERIMENT_FILE = "experiment-metadata.tsv"
"""Plate barcode -> batch, modality, cell type, time point and culture conditions."""
BARCODE_FILE = "barcode_platemap.csv"
"""Plate barcode -> plate map name."""
PROFILED_WELLS_FILE = "cpjump1_well_metadata.csv"
"""Metadata of the published well-level profiles; only its plate and well columns are used."""

PAPER_BATCH = "2020_11_04_CPJUMP1"
"""The batch the paper analyses (the other batches re-image or re-plate the same layouts)."""
PAPER_DENSITY = 100
"""Seeding density (percent of standard) of the analysed plates."""
PAPER_ANTIBIOTICS = "absent"
"""Antibiotics condition of the analysed plates."""
EXCLUDED_COMPOUND_CELL_LINE = "Cas9"
"""Compound plates seeded with Cas9-expressing cells are a side experiment, not analysed."""
ANOMALY_COLUMN = "Anomaly"
"""Column of ``experiment-metadata.tsv`` that records a plate's staining anomaly."""
NO_ANOMALY = "none"
"""Its value for a plate without an anomaly."""

SOLVENT_ONLY_COLUMN = "solvent"
"""Compound plate map column naming the solvent, which names wells without a compound."""
EMPTY_WELL = "empty"
"""``broad_sample`` and ``pert_type`` of genetic-plate wells without a perturbation."""
NEGCON_TYPE = "negcon"
"""``control_type`` of negative controls."""
TARGET_SEPARATOR = "|"
"""Separator of the multi-gene ``target_list`` and ``moa_list`` fields."""
ROWS = "ABCDEFGHIJKLMNOP"
"""Row letters of a 384-well plate."""
N_COLUMNS = 24
"""Columns of a 384-well plate."""

WELL_COLUMNS = [
    PLATE,
    WELL,
    ROW,
    COL,
    MODALITY,
    CELL_TYPE,
    TIMEPOINT,
    SAMPLE,
    NAME,
    PERT_TYPE,
    CONTROL_TYPE,
    NEGCON,
    GENE,
    TARGET_LIST,
    MOA_LIST,
]
"""Columns of :func:`well_table`, in order."""
COMPOUND_COLUMNS = ["broad_sample", "pert_iname", "target_list", "moa_list", "pert_type", "control_type"]
"""Columns the compound metadata must have."""
GENETIC_COLUMNS = ["broad_sample", "gene", "pert_type", "control_type"]
"""Columns the CRISPR and ORF metadata must have."""
EXPERIMENT_COLUMNS = [
    "Batch", "Assay_Plate_Barcode", "Perturbation", "Cell_type", "Time", "Density", "Antibiotics", "Cell_line"
]  # fmt: skip
"""Columns ``experiment-metadata.tsv`` must have."""
_PERTURBATION_FIELDS = ["broad_sample", "pert_iname", "pert_type", "control_type", "gene", "target_list", "moa_list"]
PERTURBATION_COLUMNS = [f"Metadata_{field}" for field in _PERTURBATION_FIELDS]
"""Columns of :func:`perturbations`, in order."""

_WELL_PATTERN = re.compile(r"^([A-P])(\d{2})$")


def metadata_folder(folder: str | os.PathLike | None = None) -> Path:
    """The metadata folder: ``folder`` if given, else ``data_root() / "cpjump1" / "metadata"``."""
    return Path(folder) if folder is not None else data_root() / DATASET / "metadata"


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a ``.tsv`` or ``.csv`` file as text; ``""`` and ``"NA"`` become missing.

    Raises
    ------
    FileNotFoundError
        The file does not exist (the message names it).
    ValueError
        One of ``columns`` is absent (the message names the column and the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"CPJUMP1 metadata file not found: {path}")
    table = pd.read_csv(
        path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False, na_values=["", "NA"]
    )
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")


def load_compounds(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """Compound metadata, one row per ``broad_sample`` (307: 306 compounds and DMSO).

    Read from :data:`COMPOUND_FILE`. The solvent row has no ``broad_sample`` in
    the file; it gets its ``pert_iname`` (``"DMSO"``), the name the plate maps
    and published profiles use for solvent-only wells.
    """
    path = metadata_folder(folder) / COMPOUND_FILE
    compounds = _read_table(path, COMPOUND_COLUMNS)
    compounds["broad_sample"] = compounds["broad_sample"].fillna(compounds["pert_iname"])
    return compounds


def load_crispr(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """SgRNA metadata, one row per guide (``broad_sample``, ``gene``, ``pert_type``, ``control_type``, ...)."""
    path = metadata_folder(folder) / CRISPR_FILE
    return _read_table(path, GENETIC_COLUMNS)


def load_orf(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """ORF metadata, one row per construct (``broad_sample``, ``gene``, ``pert_type``, ``control_type``, ...)."""
    path = metadata_folder(folder) / ORF_FILE
    return _read_table(path, GENETIC_COLUMNS)


def load_experiments(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """``experiment-metadata.tsv``: one row per plate and batch, with ``Time`` and ``Density`` as ints."""
    path = metadata_folder(folder) / EXPERIMENT_FILE
    experiments = _read_table(path, EXPERIMENT_COLUMNS)
    for column in ("Time", "Density"):
        numbers = pd.to_numeric(experiments[column], errors="coerce")
        bad = experiments.loc[numbers.isna() | (numbers % 1 != 0), "Assay_Plate_Barcode"].tolist()
        if bad:
            raise ValueError(f"{path}: column {column!r} is not an integer for plate(s) {bad}")
        experiments[column] = numbers.astype(int)
    return experiments


def _platemap_path(folder: str | os.PathLike | None, modality: str) -> Path:
    return metadata_folder(folder) / f"{PLATEMAP_NAME.format(modality=modality)}.tsv"


def load_platemap(folder: str | os.PathLike | None, modality: str) -> pd.DataFrame:
    """The plate map of one modality: ``well_position``, ``broad_sample``, ``row``, ``col`` (1-based).

    Wells without a ``broad_sample`` get the solvent's name on the compound map
    (they hold only DMSO) and :data:`EMPTY_WELL` on the genetic maps.

    Raises
    ------
    ValueError
        A well name is not a 384-well position or appears twice (the message names it and the file).
    """
    _check_modality(modality)
    path = _platemap_path(folder, modality)
    extra = [SOLVENT_ONLY_COLUMN] if modality == "compound" else []
    platemap = _read_table(path, ["well_position", "broad_sample", *extra])
    fill = platemap[SOLVENT_ONLY_COLUMN] if modality == "compound" else EMPTY_WELL
    platemap["broad_sample"] = platemap["broad_sample"].fillna(fill)
    duplicated = platemap.loc[platemap["well_position"].duplicated(), "well_position"].tolist()
    if duplicated:
        raise ValueError(f"{path}: well(s) {duplicated} listed more than once")
    positions = [_well_row_col(well, path) for well in platemap["well_position"]]
    platemap["row"] = [row for row, _ in positions]
    platemap["col"] = [col for _, col in positions]
    return platemap[["well_position", "broad_sample", "row", "col"]]


def _well_row_col(well: str, path: Path) -> tuple[int, int]:
    """1-based (row, column) of a well name such as ``"B07"``."""
    match = _WELL_PATTERN.match(str(well))
    if match is None or not 1 <= int(match.group(2)) <= N_COLUMNS:
        raise ValueError(f"{path}: {well!r} is not a 384-well position (A01 to P24)")
    return ROWS.index(match.group(1)) + 1, int(match.group(2))


def perturbations(folder: str | os.PathLike | None, modality: str) -> pd.DataFrame:
    """Every ``broad_sample`` a plate map of ``modality`` can hold, with :data:`PERTURBATION_COLUMNS`.

    Compounds: name, targets and MoAs from :data:`COMPOUND_FILE` (no gene).
    CRISPR and ORF: ``pert_iname`` is the ``broad_sample`` and the target list is
    the gene (missing for CRISPR negative controls, which target no gene); an
    :data:`EMPTY_WELL` row stands for wells without a perturbation.

    Raises
    ------
    ValueError
        A ``broad_sample`` appears twice in the modality's metadata (the message names it).
    """
    _check_modality(modality)
    if modality == "compound":
        source = load_compounds(folder).assign(gene=float("nan"))
    else:
        constructs = load_crispr(folder) if modality == "crispr" else load_orf(folder)
        empty = pd.DataFrame({"broad_sample": [EMPTY_WELL], "pert_type": [EMPTY_WELL]})
        source = pd.concat([constructs, empty], ignore_index=True).assign(
            pert_iname=lambda table: table["broad_sample"],
            target_list=lambda table: table["gene"],
            moa_list=float("nan"),
        )
    table = source[_PERTURBATION_FIELDS].astype(source["broad_sample"].dtype).add_prefix(METADATA_PREFIX)
    repeated = table.loc[table[SAMPLE].duplicated(), SAMPLE].tolist()
    if repeated:
        raise ValueError(
            f"{modality} metadata in {metadata_folder(folder)}: broad_sample(s) {repeated} listed more than once"
        )
    return table


def analysed_plates(folder: str | os.PathLike | None = None) -> list[str]:
    """Barcodes of the 40 plates the paper analyses (16 compound, 16 CRISPR, 8 ORF).

    The rule of the paper's analysis code, applied to ``experiment-metadata.tsv``:
    batch :data:`PAPER_BATCH`, density :data:`PAPER_DENSITY`, antibiotics
    :data:`PAPER_ANTIBIOTICS`, and no compound plate of Cas9 cells. It yields
    exactly the plates of the published well metadata.
    """
    experiments = load_experiments(folder)
    keep = (
        (experiments["Batch"] == PAPER_BATCH)
        & (experiments["Density"] == PAPER_DENSITY)
        & (experiments["Antibiotics"] == PAPER_ANTIBIOTICS)
        & ~((experiments["Perturbation"] == "compound") & (experiments["Cell_line"] == EXCLUDED_COMPOUND_CELL_LINE))
    )
    return sorted(experiments.loc[keep, "Assay_Plate_Barcode"])


def plate_conditions(
    folder: str | os.PathLike | None = None, plates: Sequence[str] | None = None, batch: str = PAPER_BATCH
) -> pd.DataFrame:
    """One row per plate: ``Metadata_Plate``, ``Metadata_modality``, ``Metadata_cell_type``, ``Metadata_timepoint``.

    Modality, cell type and time point (hours) come from the plate's row of
    ``batch`` in ``experiment-metadata.tsv`` (a barcode can recur in other
    batches, which re-image the plate later); the plate map from
    ``barcode_platemap.csv``, which must name the modality's plate map.

    Parameters
    ----------
    plates
        Plate barcodes; default :func:`analysed_plates`.
    batch
        The experiment batch to read the plates' conditions from.

    Raises
    ------
    ValueError
        A plate is missing from, or repeated in, either file, or its plate map
        does not match its modality (the message names the plate and file).
    """
    folder = metadata_folder(folder)
    plates = analysed_plates(folder) if plates is None else list(plates)
    experiments = load_experiments(folder).query("Batch == @batch")
    barcodes = _read_table(folder / BARCODE_FILE, ["Assay_Plate_Barcode", "Plate_Map_Name"])
    for table, name in ((experiments, f"{EXPERIMENT_FILE} (batch {batch})"), (barcodes, BARCODE_FILE)):
        counts = table["Assay_Plate_Barcode"].value_counts()
        absent = [plate for plate in plates if counts.get(plate, 0) == 0]
        repeated = [plate for plate in plates if counts.get(plate, 0) > 1]
        if absent or repeated:
            raise ValueError(f"{folder / name}: plate(s) {absent} missing, plate(s) {repeated} listed more than once")
    conditions = (
        pd.DataFrame({"Assay_Plate_Barcode": plates})
        .merge(experiments[["Assay_Plate_Barcode", "Perturbation", "Cell_type", "Time"]], on="Assay_Plate_Barcode")
        .merge(barcodes, on="Assay_Plate_Barcode")
    )
    expected = conditions["Perturbation"].map(lambda modality: PLATEMAP_NAME.format(modality=modality))
    mismatched = conditions.loc[conditions["Plate_Map_Name"] != expected, "Assay_Plate_Barcode"].tolist()
    if mismatched:
        raise ValueError(
            f"{folder / BARCODE_FILE}: plate(s) {mismatched} have a plate map that does not match their modality"
        )
    return conditions.rename(
        columns={
            "Assay_Plate_Barcode": PLATE,
            "Perturbation": MODALITY,
            "Cell_type": CELL_TYPE,
            "Time": TIMEPOINT,
        }
    )[[PLATE, MODALITY, CELL_TYPE, TIMEPOINT]]


def plate_anomalies(
    folder: str | os.PathLike | None = None, plates: Sequence[str] | None = None, batch: str = PAPER_BATCH
) -> pd.DataFrame:
    """The plates' conditions (:func:`plate_conditions`) and their staining anomaly, ``Metadata_anomaly``.

    The anomaly is the plate's ``Anomaly`` in ``experiment-metadata.tsv`` (batch ``batch``):
    :data:`NO_ANOMALY`, or the stain that came out wrong (``Mitotracker``, ``WGA``, ``Phalloidin``).
    Eight of the ten plates of the ``full`` run size have one.

    Raises
    ------
    ValueError
        As :func:`plate_conditions`, or the file has no ``Anomaly`` column.
    """
    folder = metadata_folder(folder)
    conditions = plate_conditions(folder, plates, batch)
    experiments = _read_table(folder / EXPERIMENT_FILE, ["Batch", "Assay_Plate_Barcode", ANOMALY_COLUMN])
    recorded = experiments[experiments["Batch"] == batch].set_index("Assay_Plate_Barcode")[ANOMALY_COLUMN]
    return conditions.assign(**{ANOMALY: conditions[PLATE].map(recorded.fillna(NO_ANOMALY))})


def platemap_wells(folder: str | os.PathLike | None, modality: str) -> pd.DataFrame:
    """The plate map of ``modality`` joined with its perturbations: one row per well position.

    Raises
    ------
    ValueError
        A plate-map well holds a ``broad_sample`` absent from the perturbation
        metadata (the message names the well, the sample and the plate map).
    """
    platemap = load_platemap(folder, modality)
    table = perturbations(folder, modality)
    known = platemap["broad_sample"].isin(table[SAMPLE])
    if not known.all():
        first = platemap[~known].iloc[0]
        path = _platemap_path(folder, modality)
        raise ValueError(
            f"{path}: well {first['well_position']} holds broad_sample {first['broad_sample']!r}, "
            f"which is not in the {modality} metadata ({(~known).sum()} unknown well(s) in all)"
        )
    return platemap.rename(
        columns={
            "well_position": WELL,
            "broad_sample": SAMPLE,
            "row": ROW,
            "col": COL,
        }
    ).merge(table, on=SAMPLE, how="left")


def profiled_wells(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """``Metadata_Plate``, ``Metadata_Well`` of the 15,275 wells with published profiles.

    The 40 analysed plates have 15,360 wells; the published profiles lack 85 of
    them (BR00116993 N01, BR00117005 P01 and 83 wells of BR00116995), which no
    design file records. Only these two columns of :data:`PROFILED_WELLS_FILE`
    are read.
    """
    path = metadata_folder(folder) / PROFILED_WELLS_FILE
    return _read_table(path, [PLATE, WELL])[[PLATE, WELL]]


def well_table(
    folder: str | os.PathLike | None = None,
    plates: Sequence[str] | None = None,
    batch: str = PAPER_BATCH,
    profiled_only: bool = False,
) -> pd.DataFrame:
    """One row per well of ``plates`` with :data:`WELL_COLUMNS`, built from the design files.

    Every plate gets all 384 positions of its modality's plate map, so the 40
    analysed plates give 15,360 wells, including 96 empty genetic wells.

    Parameters
    ----------
    folder
        The metadata folder; default :func:`metadata_folder`.
    plates
        Plate barcodes; default :func:`analysed_plates`.
    batch
        The experiment batch the plates' conditions are read from.
    profiled_only
        Keep only the wells that have published profiles (:func:`profiled_wells`):
        15,275 of the analysed plates' wells.

    Returns
    -------
    Rows sorted by plate, row and column; ``Metadata_negcon`` is True for
    negative controls (DMSO, non-targeting guides, control ORFs).
    """
    folder = metadata_folder(folder)
    conditions = plate_conditions(folder, plates, batch)
    wells = pd.concat(
        [
            platemap_wells(folder, modality).merge(plate_group, how="cross")
            for modality, plate_group in conditions.groupby(MODALITY, sort=False)
        ],
        ignore_index=True,
    )
    wells[NEGCON] = wells[CONTROL_TYPE] == NEGCON_TYPE
    if profiled_only:
        wells = wells.merge(profiled_wells(folder), on=[PLATE, WELL])
    return wells.sort_values([PLATE, ROW, COL], ignore_index=True)[WELL_COLUMNS]


def genes(folder: str | os.PathLike | None = None) -> list[str]:
    """The 160 genes CPJUMP1 perturbs: genes of the non-negative-control CRISPR guides, sorted.

    The ORF plates over-express the same genes (checked by the tests).
    """
    crispr = load_crispr(folder)
    return sorted(set(crispr.loc[crispr["control_type"] != NEGCON_TYPE, "gene"].dropna()))


def gene_compound_pairs(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """Compound–gene pairs where the compound's ``target_list`` contains a perturbed gene.

    Returns
    -------
    Columns ``Metadata_broad_sample``, ``Metadata_pert_iname``, ``Metadata_gene``;
    one row per pair, sorted by gene then compound. These are the positive pairs
    of the compound–gene matching task.
    """
    compounds = load_compounds(folder)
    targets = compounds["target_list"].fillna("").str.split(TARGET_SEPARATOR)
    pairs = compounds[["broad_sample", "pert_iname"]].assign(gene=targets).explode("gene")
    pairs = pairs[pairs["gene"].isin(genes(folder))].drop_duplicates()
    pairs.columns = [SAMPLE, NAME, GENE]
    return pairs.sort_values([GENE, SAMPLE], ignore_index=True)


def compounds_for_gene(gene: str, folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """The compounds annotated to target ``gene``: its rows of :func:`gene_compound_pairs`.

    Raises
    ------
    ValueError
        ``gene`` is not one of the perturbed :func:`genes`.
    """
    if gene not in genes(folder):
        raise ValueError(f"gene {gene!r} is not perturbed in CPJUMP1 (see cellstudy.data.cpjump1.genes())")
    pairs = gene_compound_pairs(folder)
    return pairs[pairs[GENE] == gene].reset_index(drop=True)


def design_summary(folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """Counts per modality over the analysed plates.

    Returns
    -------
    Indexed by modality, columns: ``plates``, ``wells``, ``perturbations``
    (distinct samples that are neither negative controls nor empty),
    ``negcon_wells``, ``empty_wells`` and ``genes`` (perturbed genes reached:
    directly for CRISPR and ORF, through annotated targets for compounds).
    """
    folder = metadata_folder(folder)
    wells = well_table(folder).assign(
        empty=lambda table: table[PERT_TYPE] == EMPTY_WELL,
        reached=lambda table: table[TARGET_LIST].fillna("").str.split(TARGET_SEPARATOR),
    )
    treated = wells[~(wells[NEGCON] | wells["empty"])]
    reached = treated.explode("reached")
    reached = reached[reached["reached"].isin(genes(folder))]
    by_modality = wells.groupby(MODALITY)
    summary = pd.DataFrame(
        {
            "plates": by_modality[PLATE].nunique(),
            "wells": by_modality.size(),
            "perturbations": treated.groupby(MODALITY)[SAMPLE].nunique(),
            "negcon_wells": by_modality[NEGCON].sum(),
            "empty_wells": by_modality["empty"].sum(),
            "genes": reached.groupby(MODALITY)["reached"].nunique(),
        }
    )
    return summary.reindex(list(MODALITIES)).rename_axis("modality")
