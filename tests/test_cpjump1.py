"""Tests for cellstudy.data.cpjump1: the real design files parsed independently, and a planted design."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from cellstudy.data import cpjump1

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cpjump1" / "metadata"
needs_shared = pytest.mark.skipif(not (METADATA / "experiment-metadata.tsv").is_file(), reason="shared data absent")


def read_rows(name: str) -> list[dict[str, str]]:
    """A real metadata file as a list of dicts, with the csv module."""
    with open(METADATA / name, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t" if name.endswith(".tsv") else ","))


@pytest.fixture(scope="module")
def design() -> pd.DataFrame:
    return cpjump1.well_table(METADATA)


@pytest.fixture(scope="module")
def published() -> list[dict[str, str]]:
    return read_rows("cpjump1_well_metadata.csv")


# ---------------------------------------------------------------- real design


@needs_shared
def test_compounds_are_306_samples_of_302_names_plus_dmso():
    compounds = cpjump1.load_compounds(METADATA)
    plain = read_rows("JUMP-Target-1_compound_metadata.tsv")
    moa = read_rows("JUMP-Target-1_compound_moa_metadata.tsv")
    assert len(compounds) == len(plain) == 307
    assert compounds["broad_sample"].is_unique
    assert set(compounds["broad_sample"]) == {r["broad_sample"] if r["broad_sample"] != "NA" else "DMSO" for r in plain}
    assert set(compounds["pert_iname"]) == {r["Metadata_pert_iname"] for r in moa}
    assert compounds["pert_iname"].nunique() == len(moa) == 303  # 302 compounds, 4 of them as two samples, + DMSO
    assert Counter(compounds["control_type"].fillna("trt")) == Counter(
        {"trt": 260, "poscon_cp": 26, "poscon_diverse": 14, "poscon_orf": 6, "negcon": 1}
    )


@needs_shared
def test_160_genes_with_one_or_two_guides_and_one_orf_each():
    crispr = [r for r in read_rows("JUMP-Target-1_crispr_metadata.tsv") if r["control_type"] != "negcon"]
    orf = [r for r in read_rows("JUMP-Target-1_orf_metadata.tsv") if r["control_type"] != "negcon"]
    guides_per_gene = Counter(r["gene"] for r in crispr)
    assert cpjump1.genes(METADATA) == sorted(guides_per_gene) == sorted(r["gene"] for r in orf)
    assert len(guides_per_gene) == 160
    # Not exactly two guides per gene: 15 genes have a single guide, placed in two wells instead.
    assert Counter(guides_per_gene.values()) == {2: 145, 1: 15}
    assert len(cpjump1.load_crispr(METADATA)) == 335 and len(cpjump1.load_orf(METADATA)) == 175


@needs_shared
def test_every_gene_fills_two_wells_of_every_genetic_plate(design):
    genetic = design[design["Metadata_modality"].isin(["crispr", "orf"]) & ~design["Metadata_negcon"]]
    genetic = genetic[genetic["Metadata_pert_type"] != "empty"]
    wells_per_gene = genetic.groupby(["Metadata_Plate", "Metadata_gene"]).size()
    assert set(wells_per_gene) == {2}
    assert set(wells_per_gene.groupby(level=0).size()) == {160}


@needs_shared
def test_analysed_plates_are_the_published_plates(published):
    plates = cpjump1.analysed_plates(METADATA)
    assert plates == sorted({r["Metadata_Plate"] for r in published})
    modality = {r["Assay_Plate_Barcode"]: r["Perturbation"] for r in read_rows("experiment-metadata.tsv")}
    assert Counter(modality[p] for p in plates) == {"compound": 16, "crispr": 16, "orf": 8}


@needs_shared
def test_plate_anomalies_are_the_experiment_metadata_anomaly_column():
    recorded = {(r["Batch"], r["Assay_Plate_Barcode"]): r["Anomaly"] for r in read_rows("experiment-metadata.tsv")}
    plates = cpjump1.analysed_plates(METADATA)
    anomalies = cpjump1.plate_anomalies(METADATA)
    assert anomalies["Metadata_Plate"].tolist() == plates
    assert anomalies["Metadata_anomaly"].tolist() == [recorded[("2020_11_04_CPJUMP1", plate)] for plate in plates]
    conditions = cpjump1.plate_conditions(METADATA)
    pd.testing.assert_frame_equal(anomalies.drop(columns="Metadata_anomaly"), conditions)


@needs_shared
def test_well_table_has_all_384_positions_of_the_40_plates(design):
    assert len(design) == 40 * 384
    assert (design.groupby("Metadata_Plate")["Metadata_Well"].nunique() == 384).all()
    rebuilt = [f"{chr(ord('A') + r - 1)}{c:02d}" for r, c in zip(design["Metadata_row"], design["Metadata_col"])]
    assert rebuilt == design["Metadata_Well"].tolist()
    assert design["Metadata_row"].between(1, 16).all() and design["Metadata_col"].between(1, 24).all()


@needs_shared
def test_wells_without_published_profiles_are_85_on_three_plates(design, published):
    profiled = {(r["Metadata_Plate"], r["Metadata_Well"]) for r in published}
    designed = set(zip(design["Metadata_Plate"], design["Metadata_Well"]))
    assert len(published) == 15_275 and profiled <= designed
    assert Counter(plate for plate, _ in designed - profiled) == {"BR00116995": 83, "BR00116993": 1, "BR00117005": 1}


@needs_shared
def test_profiled_well_table_equals_published_key_columns(published):
    table = cpjump1.well_table(METADATA, profiled_only=True)
    assert len(table) == 15_275
    ours = table.set_index(["Metadata_Plate", "Metadata_Well"])
    theirs = {(r["Metadata_Plate"], r["Metadata_Well"]): r for r in published}
    assert set(ours.index) == set(theirs)

    def published_value(row: dict[str, str], column: str) -> str | None:
        return None if row[column] == "NA" else row[column]

    def our_value(value) -> str | None:
        return None if pd.isna(value) else str(value)

    pairs = {
        "Metadata_broad_sample": "Metadata_broad_sample",
        "Metadata_pert_iname": "Metadata_pert_iname",
        "Metadata_pert_type": "Metadata_pert_type",
        "Metadata_control_type": "Metadata_control_type",
        "Metadata_gene": "Metadata_gene",
        "Metadata_cell_type": "Metadata_cell_line",
        "Metadata_timepoint": "Metadata_timepoint",
    }
    differences = set()
    for key, row in theirs.items():
        mine = ours.loc[key]
        for our_column, their_column in pairs.items():
            if our_value(mine[our_column]) != published_value(row, their_column):
                differences.add((our_column, our_value(mine[our_column]), row[their_column]))
        assert mine["Metadata_modality"] == row["Metadata_experiment_type"].lower(), key
        assert mine["Metadata_negcon"] == (row["Metadata_negcon_or_other"] == "negcon"), key
    # The published profiles spell two compound names differently from the JUMP-Target metadata.
    assert differences == {
        ("Metadata_pert_iname", "ME-0328", "ME0328"),
        ("Metadata_pert_iname", "salicylic-acid", "salicylic-acid|sodium-salicylate"),
    }


@needs_shared
def test_target_lists_come_from_the_additional_annotations(design):
    annotated = {
        r["broad_sample"] or "DMSO": r["target_list"] or None
        for r in read_rows("JUMP-Target-1_compound_metadata_additional_annotations.tsv")
    }
    compound = design[design["Metadata_modality"] == "compound"]
    expected = compound["Metadata_broad_sample"].map(annotated)
    assert compound["Metadata_target_list"].fillna("").tolist() == expected.fillna("").tolist()
    genetic = design[design["Metadata_modality"] != "compound"]
    assert genetic["Metadata_target_list"].fillna("").tolist() == genetic["Metadata_gene"].fillna("").tolist()


@needs_shared
def test_gene_compound_pairs_match_plain_set_arithmetic():
    crispr_genes = {r["gene"] for r in read_rows("JUMP-Target-1_crispr_metadata.tsv") if r["control_type"] != "negcon"}
    compounds = read_rows("JUMP-Target-1_compound_metadata_additional_annotations.tsv")
    expected = {
        (r["broad_sample"], gene) for r in compounds for gene in set(r["target_list"].split("|")) & crispr_genes
    }
    pairs = cpjump1.gene_compound_pairs(METADATA)
    assert set(zip(pairs["Metadata_broad_sample"], pairs["Metadata_gene"])) == expected
    assert len(pairs) == len(expected) == 466
    # Every one of the 306 compounds targets at least one perturbed gene, and every gene has a compound.
    assert len({sample for sample, _ in expected}) == 306
    assert {gene for _, gene in expected} == crispr_genes
    plk1 = cpjump1.compounds_for_gene("PLK1", METADATA)
    assert set(plk1["Metadata_broad_sample"]) == {sample for sample, gene in expected if gene == "PLK1"}


@needs_shared
def test_design_summary_counts_from_raw_plate_maps(published):
    modality = {r["Metadata_Plate"]: r["Metadata_experiment_type"].lower() for r in published}
    plates = Counter(modality.values())

    def negcons(name: str) -> set[str]:
        return {r["broad_sample"] for r in read_rows(name) if r["control_type"] == "negcon"}

    negcon_ids = {
        "compound": {""},  # solvent-only wells have no broad_sample in the plate map
        "crispr": negcons("JUMP-Target-1_crispr_metadata.tsv"),
        "orf": negcons("JUMP-Target-1_orf_metadata.tsv"),
    }
    summary = cpjump1.design_summary(METADATA)
    for modality in ("compound", "crispr", "orf"):
        platemap = [r["broad_sample"] for r in read_rows(f"JUMP-Target-1_{modality}_platemap.tsv")]
        empty = {""} - negcon_ids[modality]
        row = summary.loc[modality]
        assert row["plates"] == plates[modality]
        assert row["wells"] == plates[modality] * len(platemap)
        assert row["negcon_wells"] == plates[modality] * sum(s in negcon_ids[modality] for s in platemap)
        assert row["empty_wells"] == plates[modality] * sum(s in empty for s in platemap)
        assert row["perturbations"] == len(set(platemap) - negcon_ids[modality] - empty)
        assert row["genes"] == 160
    assert summary["perturbations"].tolist() == [306, 305, 160]


# ---------------------------------------------------------------- planted design

PLANTED = {
    "JUMP-Target-1_compound_metadata_additional_annotations.tsv": [
        ["broad_sample", "pert_iname", "target_list", "moa_list", "pert_type", "control_type"],
        ["BRD-1", "aaa", "G1|G9", "moa one", "trt", ""],
        ["BRD-2", "bbb", "G2", "moa two", "control", "poscon_cp"],
        ["", "DMSO", "", "control vehicle", "control", "negcon"],
    ],
    "JUMP-Target-1_crispr_metadata.tsv": [
        ["broad_sample", "gene", "pert_type", "control_type"],
        ["g1a", "G1", "trt", ""],
        ["g1b", "G1", "trt", ""],
        ["g2a", "G2", "control", "poscon_cp"],
        ["nt", "", "control", "negcon"],
    ],
    "JUMP-Target-1_orf_metadata.tsv": [
        ["broad_sample", "gene", "pert_type", "control_type"],
        ["o1", "G1", "trt", ""],
        ["o2", "G2", "control", "poscon_cp"],
        ["o3", "X", "control", "negcon"],
    ],
    "JUMP-Target-1_compound_platemap.tsv": [
        ["well_position", "broad_sample", "solvent"],
        ["A01", "BRD-1", "DMSO"],
        ["A02", "", "DMSO"],
        ["B01", "BRD-2", "DMSO"],
    ],
    "JUMP-Target-1_crispr_platemap.tsv": [
        ["well_position", "broad_sample"],
        ["A01", "g1a"],
        ["A02", "g1b"],
        ["B01", "nt"],
        ["B02", ""],
    ],
    "JUMP-Target-1_orf_platemap.tsv": [["well_position", "broad_sample"], ["P24", "o3"], ["A01", "o1"]],
    "experiment-metadata.tsv": [
        ["Batch", "Assay_Plate_Barcode", "Perturbation", "Cell_type", "Time", "Density", "Antibiotics", "Cell_line"],
        [cpjump1.PAPER_BATCH, "P1", "compound", "U2OS", "24", "100", "absent", "Parental"],
        [cpjump1.PAPER_BATCH, "P2", "crispr", "A549", "144", "100", "absent", "Cas9"],
        [cpjump1.PAPER_BATCH, "P3", "orf", "U2OS", "48", "100", "absent", "Parental"],
        [cpjump1.PAPER_BATCH, "P4", "compound", "A549", "48", "100", "absent", "Cas9"],
        [cpjump1.PAPER_BATCH, "P5", "crispr", "A549", "144", "100", "Puromycin", "Cas9"],
        [cpjump1.PAPER_BATCH, "P6", "orf", "A549", "48", "80", "absent", "Parental"],
        ["later_reimaging", "P1", "compound", "U2OS", "999", "100", "absent", "Parental"],
    ],
    "barcode_platemap.csv": [
        ["Assay_Plate_Barcode", "Plate_Map_Name"],
        ["P1", "JUMP-Target-1_compound_platemap"],
        ["P2", "JUMP-Target-1_crispr_platemap"],
        ["P3", "JUMP-Target-1_orf_platemap"],
        ["P4", "JUMP-Target-1_compound_platemap"],
        ["P5", "JUMP-Target-1_crispr_platemap"],
        ["P6", "JUMP-Target-1_orf_platemap"],
    ],
}


def write_design(folder: Path, files: dict[str, list[list[str]]]) -> Path:
    for name, rows in files.items():
        with open(folder / name, "w", newline="") as handle:
            csv.writer(handle, delimiter="\t" if name.endswith(".tsv") else ",").writerows(rows)
    return folder


@pytest.fixture
def planted(tmp_path) -> Path:
    return write_design(tmp_path, PLANTED)


def with_change(folder: Path, name: str, rows: list[list[str]]) -> Path:
    return write_design(folder, {name: rows})


def test_planted_design_gives_the_expected_well_table(planted):
    assert cpjump1.analysed_plates(planted) == ["P1", "P2", "P3"]
    table = cpjump1.well_table(planted)
    assert list(table.columns) == [
        "Metadata_Plate", "Metadata_Well", "Metadata_row", "Metadata_col", "Metadata_modality", "Metadata_cell_type",
        "Metadata_timepoint", "Metadata_broad_sample", "Metadata_pert_iname", "Metadata_pert_type",
        "Metadata_control_type", "Metadata_negcon", "Metadata_gene", "Metadata_target_list", "Metadata_moa_list",
    ]  # fmt: skip
    got = [tuple(None if pd.isna(v) else v for v in row) for row in table.itertuples(index=False)]
    assert got == [
        ("P1", "A01", 1, 1, "compound", "U2OS", 24, "BRD-1", "aaa", "trt", None, False, None, "G1|G9", "moa one"),
        (
            "P1",
            "A02",
            1,
            2,
            "compound",
            "U2OS",
            24,
            "DMSO",
            "DMSO",
            "control",
            "negcon",
            True,
            None,
            None,
            "control vehicle",
        ),
        (
            "P1",
            "B01",
            2,
            1,
            "compound",
            "U2OS",
            24,
            "BRD-2",
            "bbb",
            "control",
            "poscon_cp",
            False,
            None,
            "G2",
            "moa two",
        ),
        ("P2", "A01", 1, 1, "crispr", "A549", 144, "g1a", "g1a", "trt", None, False, "G1", "G1", None),
        ("P2", "A02", 1, 2, "crispr", "A549", 144, "g1b", "g1b", "trt", None, False, "G1", "G1", None),
        ("P2", "B01", 2, 1, "crispr", "A549", 144, "nt", "nt", "control", "negcon", True, None, None, None),
        ("P2", "B02", 2, 2, "crispr", "A549", 144, "empty", "empty", "empty", None, False, None, None, None),
        ("P3", "A01", 1, 1, "orf", "U2OS", 48, "o1", "o1", "trt", None, False, "G1", "G1", None),
        ("P3", "P24", 16, 24, "orf", "U2OS", 48, "o3", "o3", "control", "negcon", True, "X", "X", None),
    ]
    assert cpjump1.well_table(planted, plates=["P2"])["Metadata_Plate"].unique().tolist() == ["P2"]


def test_planted_helpers(planted):
    assert cpjump1.genes(planted) == ["G1", "G2"]
    pairs = cpjump1.gene_compound_pairs(planted)
    assert list(zip(pairs["Metadata_pert_iname"], pairs["Metadata_gene"])) == [("aaa", "G1"), ("bbb", "G2")]
    assert cpjump1.compounds_for_gene("G2", planted)["Metadata_broad_sample"].tolist() == ["BRD-2"]
    with pytest.raises(ValueError, match="'G9'"):
        cpjump1.compounds_for_gene("G9", planted)  # a compound target, but not a perturbed gene
    summary = cpjump1.design_summary(planted)
    assert summary.to_dict("index") == {
        "compound": {"plates": 1, "wells": 3, "perturbations": 2, "negcon_wells": 1, "empty_wells": 0, "genes": 2},
        "crispr": {"plates": 1, "wells": 4, "perturbations": 2, "negcon_wells": 1, "empty_wells": 1, "genes": 1},
        "orf": {"plates": 1, "wells": 2, "perturbations": 1, "negcon_wells": 1, "empty_wells": 0, "genes": 1},
    }


def test_missing_file_is_named(planted):
    (planted / "barcode_platemap.csv").unlink()
    with pytest.raises(FileNotFoundError, match="barcode_platemap.csv"):
        cpjump1.well_table(planted)


def test_missing_column_names_column_and_file(planted):
    rows = [[r[0], r[2], r[3]] for r in PLANTED["JUMP-Target-1_crispr_metadata.tsv"]]
    with_change(planted, "JUMP-Target-1_crispr_metadata.tsv", rows)
    with pytest.raises(ValueError, match=r"JUMP-Target-1_crispr_metadata.tsv.*'gene'"):
        cpjump1.well_table(planted)


def test_unknown_broad_sample_names_well_and_platemap(planted):
    rows = PLANTED["JUMP-Target-1_orf_platemap.tsv"] + [["C03", "o-unknown"]]
    with_change(planted, "JUMP-Target-1_orf_platemap.tsv", rows)
    with pytest.raises(ValueError, match=r"JUMP-Target-1_orf_platemap.tsv: well C03 .*'o-unknown'"):
        cpjump1.well_table(planted)


@pytest.mark.parametrize(
    ("extra", "message"), [(["Q01", "o1"], "'Q01'"), (["A25", "o1"], "'A25'"), (["A01", "o2"], "A01")]
)
def test_bad_or_repeated_well_is_named(planted, extra, message):
    with_change(planted, "JUMP-Target-1_orf_platemap.tsv", PLANTED["JUMP-Target-1_orf_platemap.tsv"] + [extra])
    with pytest.raises(ValueError, match=rf"JUMP-Target-1_orf_platemap.tsv.*{message}"):
        cpjump1.load_platemap(planted, "orf")


def test_plate_missing_from_barcode_file_is_named(planted):
    with_change(planted, "barcode_platemap.csv", PLANTED["barcode_platemap.csv"][:2])
    with pytest.raises(ValueError, match=r"barcode_platemap.csv.*'P2'"):
        cpjump1.well_table(planted)


def test_plate_map_contradicting_modality_is_named(planted):
    rows = [r if r[0] != "P3" else ["P3", "JUMP-Target-1_crispr_platemap"] for r in PLANTED["barcode_platemap.csv"]]
    with_change(planted, "barcode_platemap.csv", rows)
    with pytest.raises(ValueError, match=r"'P3'.*does not match"):
        cpjump1.well_table(planted)


def test_repeated_broad_sample_is_named(planted):
    rows = PLANTED["JUMP-Target-1_crispr_metadata.tsv"] + [["g1a", "G7", "trt", ""]]
    with_change(planted, "JUMP-Target-1_crispr_metadata.tsv", rows)
    with pytest.raises(ValueError, match="'g1a'"):
        cpjump1.well_table(planted)


def test_non_integer_time_names_column_and_plate(planted):
    rows = [r if r[1] != "P3" else [*r[:4], "two days", *r[5:]] for r in PLANTED["experiment-metadata.tsv"]]
    with_change(planted, "experiment-metadata.tsv", rows)
    with pytest.raises(ValueError, match=r"experiment-metadata.tsv.*'Time'.*'P3'"):
        cpjump1.load_experiments(planted)


def test_unknown_modality_is_rejected(planted):
    with pytest.raises(ValueError, match="'cdna'"):
        cpjump1.load_platemap(planted, "cdna")
