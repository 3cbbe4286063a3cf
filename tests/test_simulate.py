"""Tests for cellstudy.simulation.simulate: rendering checked with skimage, the design against the raw CPJUMP1 files,
and the written screen against its planted ground truth."""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist
from skimage import filters, measure, segmentation

from cellstudy.data.images import CHANNELS, read_field
from cellstudy.simulation import simulate as sim
from cellstudy.simulation.phenotypes import (
    AXIS_GAINS,
    AXIS_NAMES,
    N_AXES,
    latent_columns,
)

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cpjump1" / "metadata"
needs_shared = pytest.mark.skipif(not (METADATA / "experiment-metadata.tsv").is_file(), reason="shared data absent")
TINY = replace(sim.QUICK_CONFIG, n_genes=3, image_size=96, metadata_folder=str(METADATA))


def phenotype(**values: float) -> np.ndarray:
    vector = np.zeros(N_AXES)
    for name, value in values.items():
        vector[AXIS_NAMES.index(name)] = value
    return vector


def render(seed: int = 0, size: int = 192, **values: float) -> sim.Field:
    return sim.render_field(phenotype(**values), np.random.default_rng(seed), size=size)


def otsu_nuclei(image: np.ndarray) -> np.ndarray:
    dna = filters.gaussian(image[CHANNELS.index("DNA")].astype(float), 1.0, preserve_range=True)
    return dna > filters.threshold_otsu(dna)


def read_rows(name: str) -> list[dict[str, str]]:
    with open(METADATA / name, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t" if name.endswith(".tsv") else ","))


# ---------------------------------------------------------------- rendering


def test_bandpass_noise_is_standardised_and_in_band():
    noise = sim.bandpass_noise(np.random.default_rng(0), (256, 256), 4.0, 16.0)
    assert noise.mean() == pytest.approx(0.0, abs=0.05)
    assert noise.std() == pytest.approx(1.0, abs=1e-4)
    power = np.abs(np.fft.fft2(noise)) ** 2
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij"))
    band = (frequency >= 1 / 32) & (frequency <= 1 / 2)  # the band widened by one log-sd on each side
    assert power[band].sum() / power.sum() > 0.9


def test_place_cells_keeps_distance_extent_and_colonies():
    rng = np.random.default_rng(1)
    colonies = np.zeros((100, 100))
    colonies[:, :50] = 1.0
    centres = sim.place_cells(rng, 40, (0, 100), 8.0, colonies)
    assert 0 < len(centres) <= 40
    assert pdist(centres).min() >= 8.0
    assert ((centres >= 0) & (centres < 100)).all()
    assert (centres[:, 1] < 50).all()  # rejected where the colony map is 0


def test_render_is_deterministic_and_well_formed():
    first, second = render(seed=4), render(seed=4)
    assert first.image.dtype == np.uint16 and first.image.shape == (len(CHANNELS), 192, 192)
    assert first.image.tobytes() == second.image.tobytes()
    assert render(seed=5).image.tobytes() != first.image.tobytes()


def test_planted_nuclei_are_the_ones_in_the_dna_channel():
    field = render(seed=2, size=256)
    labels = np.unique(field.nuclei)
    assert labels[0] == 0 and list(labels[1:]) == list(range(1, field.n_cells + 1))
    segmented = otsu_nuclei(field.image)
    planted = field.nuclei > 0
    assert (segmented & planted).sum() / (segmented | planted).sum() > 0.8
    # touching nuclei may merge in the segmentation; mitotic chromatin is smaller but still found
    assert measure.label(segmented).max() == pytest.approx(field.n_cells, rel=0.15)


def test_phenotypes_move_what_they_name():
    def nucleus_area(field: sim.Field) -> float:
        return float(
            np.median([region.area for region in measure.regionprops(segmentation.clear_border(field.nuclei))])
        )

    def mean_in_cells(field: sim.Field, channel: str) -> float:
        return float(field.image[CHANNELS.index(channel)][field.image[CHANNELS.index("RNA")] > 2000].mean())

    def value(axis: str, log_change: float) -> float:
        """The value on ``axis`` that moves its rendering parameter by ``exp(log_change)``."""
        return log_change / float(AXIS_GAINS[AXIS_NAMES.index(axis)])

    controls = [render(seed) for seed in range(3)]
    # planted: radii x exp(0.45), so area x 2.46
    bigger_nuclei = [render(s, nuclear_size=value("nuclear_size", 0.45)) for s in range(3)]
    assert np.mean([nucleus_area(f) for f in bigger_nuclei]) > 2.0 * np.mean([nucleus_area(f) for f in controls])
    # planted: density x exp(-1.05) = 0.35
    fewer_cells = [render(s, cell_count=value("cell_count", -1.05)) for s in range(3)]
    assert np.mean([f.n_cells for f in fewer_cells]) < 0.6 * np.mean([f.n_cells for f in controls])
    # planted: stain x exp(0.75) = 2.1
    for axis, channel in (("mito_mass", "Mito"), ("nuclear_intensity", "DNA")):
        brighter = [render(s, **{axis: value(axis, 0.75)}) for s in range(3)]
        assert np.mean([mean_in_cells(f, channel) for f in brighter]) > 1.3 * np.mean(
            [mean_in_cells(f, channel) for f in controls]
        )


def test_render_rejects_a_wrong_phenotype_length():
    with pytest.raises(ValueError, match=f"{N_AXES} values"):
        sim.render_field(np.zeros(3), np.random.default_rng(0))


def test_edge_weight_rings():
    assert sim.edge_weight(1, 12) == 1.0 and sim.edge_weight(16, 24) == 1.0
    assert sim.edge_weight(2, 12) == 0.5 and sim.edge_weight(8, 23) == 0.5
    assert sim.edge_weight(3, 3) == 0.0


# ---------------------------------------------------------------- design


@needs_shared
def test_select_genes_checks_names_and_count():
    assert sim.select_genes(replace(TINY, genes=("PLK1", "AURKB"))) == ["AURKB", "PLK1"]
    with pytest.raises(ValueError, match="NOT_A_GENE"):
        sim.select_genes(replace(TINY, genes=("PLK1", "NOT_A_GENE")))
    with pytest.raises(ValueError, match="n_genes"):
        sim.select_genes(replace(TINY, n_genes=10_000))
    with pytest.raises(ValueError, match="cell_types"):
        sim.design(replace(TINY, cell_types=("HeLa",)))


@needs_shared
def test_design_matches_the_raw_platemaps_and_metadata():
    config = replace(TINY, n_genes=6, negcon_wells_per_plate=5)
    wells = sim.design(config)
    genes = set(sim.select_genes(config))
    guides = {row["broad_sample"]: row["gene"] for row in read_rows("JUMP-Target-1_crispr_metadata.tsv")}
    orfs = {row["broad_sample"]: row["gene"] for row in read_rows("JUMP-Target-1_orf_metadata.tsv")}
    targets = {
        row["broad_sample"]: set(row["target_list"].split("|"))
        for row in read_rows("JUMP-Target-1_compound_metadata_additional_annotations.tsv")
        if row["broad_sample"]
    }
    for modality in ("compound", "crispr", "orf"):
        platemap = {
            row["well_position"]: row["broad_sample"] for row in read_rows(f"JUMP-Target-1_{modality}_platemap.tsv")
        }
        part = wells[wells["Metadata_modality"] == modality]
        assert part["Metadata_Plate"].nunique() == config.n_replicate_plates
        for well, sample in zip(part["Metadata_Well"], part["Metadata_broad_sample"]):
            assert platemap[well] == ("" if sample == "DMSO" else sample)
        treated = part[~part["Metadata_negcon"]]
        if modality == "compound":
            assert all(targets[s] & genes for s in treated["Metadata_broad_sample"])
            expected = {s for s, t in targets.items() if t & genes and s in platemap.values()}
        else:
            lookup = guides if modality == "crispr" else orfs
            assert set(treated["Metadata_broad_sample"].map(lookup)) <= genes
            expected = {s for s, g in lookup.items() if g in genes and s in platemap.values()}
        assert set(treated["Metadata_broad_sample"]) == expected  # both guides, the ORF, every compound
        negcon_wells = part[part["Metadata_negcon"]].groupby("Metadata_Plate")["Metadata_Well"].apply(frozenset)
        assert negcon_wells.map(len).eq(5).all() and negcon_wells.nunique() == 1
    assert wells["Metadata_Plate"].eq("SIM_" + wells["Metadata_source_plate"]).all()


@needs_shared
def test_oracle_scales_the_short_timepoint_and_zeroes_negcons():
    config = replace(TINY, timepoints=("short", "long"))
    wells = sim.design(config)
    perturbations = sim.perturbation_table(wells)
    genes = sim.select_genes(config)
    truth = sim.perturbation_phenotypes(perturbations, genes, config.cell_types, config.phenotypes, 0, genes)
    oracle = sim.well_phenotypes(wells, truth, np.zeros((len(wells), N_AXES)), config)
    latent = oracle[latent_columns()].to_numpy()
    full = truth.set_index("Metadata_broad_sample").loc[wells["Metadata_broad_sample"], latent_columns()].to_numpy()
    short = wells.groupby("Metadata_modality")["Metadata_timepoint"].transform("min") == wells["Metadata_timepoint"]
    assert np.allclose(latent[short.to_numpy()], config.phenotypes.early_timepoint_strength * full[short.to_numpy()])
    assert np.allclose(latent[~short.to_numpy()], full[~short.to_numpy()])
    assert np.allclose(latent[wells["Metadata_negcon"].to_numpy()], 0)


@needs_shared
def test_guides_of_a_gene_agree_more_than_guides_of_different_genes():
    config = replace(TINY, n_genes=40, modalities=("crispr",))
    wells = sim.design(config)
    genes = sim.select_genes(config)
    truth = sim.perturbation_phenotypes(
        sim.perturbation_table(wells), genes, config.cell_types, config.phenotypes, 0, genes
    )
    _, deviations = sim.well_states(wells, config.technical, config.seed)
    oracle = sim.well_phenotypes(wells, truth, deviations, config)
    rendered = oracle[~oracle["Metadata_negcon"]]
    profiles = rendered.groupby("Metadata_broad_sample")[
        [c for c in rendered if c.startswith(sim.RENDERED_PREFIX)]
    ].median()
    gene = rendered.drop_duplicates("Metadata_broad_sample").set_index("Metadata_broad_sample")["Metadata_gene"][
        profiles.index
    ]
    unit = profiles.to_numpy() / np.linalg.norm(profiles.to_numpy(), axis=1, keepdims=True)
    similarity = unit @ unit.T
    same = (gene.to_numpy()[:, None] == gene.to_numpy()[None, :]) & ~np.eye(len(gene), dtype=bool)
    different = gene.to_numpy()[:, None] != gene.to_numpy()[None, :]
    assert similarity[same].mean() > similarity[different].mean() + 0.2


# ---------------------------------------------------------------- the written screen


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> sim.SimulationResult:
    if not (METADATA / "experiment-metadata.tsv").is_file():
        pytest.skip("shared data absent")
    return sim.simulate(replace(TINY, n_workers=1), tmp_path_factory.mktemp("one_worker"), progress=False)


def test_screen_is_identical_with_two_workers(screen, tmp_path):
    other = sim.simulate(replace(TINY, n_workers=2), tmp_path, progress=False)
    files = sorted(p.relative_to(screen.out_dir) for p in screen.out_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other.out_dir) for p in other.out_dir.rglob("*") if p.is_file())
    for name in files:
        if name.name != sim.SUMMARY_FILE:  # it records n_workers
            assert (screen.out_dir / name).read_bytes() == (other.out_dir / name).read_bytes(), name


def test_screen_files_and_tables(screen):
    assert not list(screen.out_dir.rglob("*.tmp"))
    for attribute, name in sim.TABLE_FILES.items():
        written = pd.read_csv(screen.out_dir / name)
        assert len(written) == len(getattr(screen, attribute))
    assert (screen.out_dir / sim.SUMMARY_FILE).is_file()
    assert len(screen.oracle) == len(screen.wells)
    assert set(screen.wells.columns) >= {"Metadata_Plate", "Metadata_Well", "Metadata_broad_sample", "Metadata_n_cells"}


def test_images_are_readable_and_rerender_exactly(screen):
    for record in screen.wells.sample(4, random_state=0).to_dict("records"):
        plate, well = record["Metadata_Plate"], record["Metadata_Well"]
        image = read_field(screen.image_folder / plate, well, 1)
        acquisition, _ = sim.well_state(
            plate, well, record["Metadata_row"], record["Metadata_col"], TINY.technical, TINY.seed
        )
        rendered = screen.oracle.loc[
            (screen.oracle["Metadata_Plate"] == plate) & (screen.oracle["Metadata_Well"] == well),
            [sim.RENDERED_PREFIX + name for name in AXIS_NAMES],
        ].to_numpy(np.float32)[0]
        again = sim.render_field(
            rendered, sim.keyed_rng(TINY.seed, "field", plate, well, 1), size=TINY.image_size, acquisition=acquisition
        )
        assert np.array_equal(image, again.image)
        assert again.n_cells == record["Metadata_n_cells"]


def test_planted_cell_counts_match_the_images(screen):
    counted = [
        measure.label(otsu_nuclei(read_field(screen.image_folder / plate, well, 1))).max()
        for plate, well in zip(screen.wells["Metadata_Plate"], screen.wells["Metadata_Well"])
    ]
    assert sum(counted) == pytest.approx(screen.wells["Metadata_n_cells"].sum(), rel=0.15)


def test_pairs_are_the_annotated_simulated_targets(screen):
    genes = set(sim.select_genes(TINY))
    targets = {
        row["broad_sample"]: set(row["target_list"].split("|"))
        for row in read_rows("JUMP-Target-1_compound_metadata_additional_annotations.tsv")
        if row["broad_sample"]
    }
    annotated = screen.pairs[screen.pairs["annotated"]]
    compounds = screen.wells.loc[
        screen.wells["Metadata_modality"].eq("compound") & ~screen.wells["Metadata_negcon"], "Metadata_broad_sample"
    ]
    expected = {(c, g) for c in set(compounds) for g in targets[c] & genes}
    assert set(zip(annotated["Metadata_broad_sample"], annotated["Metadata_gene"])) == expected
    drivers = screen.pairs[~screen.pairs["annotated"]]
    assert all(g not in targets[c] for c, g in zip(drivers["Metadata_broad_sample"], drivers["Metadata_gene"]))


def test_quick_profile_is_fast(tmp_path):
    if not (METADATA / "experiment-metadata.tsv").is_file():
        pytest.skip("shared data absent")
    start = time.perf_counter()
    result = sim.simulate(replace(sim.QUICK_CONFIG, metadata_folder=str(METADATA)), tmp_path, progress=False)
    assert time.perf_counter() - start < 30
    assert len(result.wells) > 40


def test_field_table_points_at_readable_fields_of_every_well(screen):
    fields = screen.field_table()
    assert len(fields) == len(screen.wells) * TINY.fields_per_well
    first = fields.iloc[0]
    image = read_field(first["folder"], first["well"], first["field"])
    assert image.shape == (5, TINY.image_size, TINY.image_size)
    assert (fields["Metadata_Plate"] == [Path(folder).name for folder in fields["folder"]]).all()


def test_load_reads_back_the_written_tables(screen):
    loaded = sim.SimulationResult.load(screen.out_dir)
    pd.testing.assert_frame_equal(loaded.oracle, screen.oracle, check_dtype=False)
    assert list(loaded.wells["Metadata_Well"]) == list(screen.wells["Metadata_Well"])


def test_load_refuses_an_incomplete_simulation(tmp_path):
    with pytest.raises(FileNotFoundError, match="ground_truth.json"):
        sim.SimulationResult.load(tmp_path)


def test_bin_native_averages_blocks():
    image = np.arange(2 * 4 * 6, dtype=np.uint16).reshape(2, 4, 6)
    binned = sim.bin_native(image, 2)
    assert binned.shape == (2, 2, 3)
    assert binned[1, 1, 2] == image[1, 2:4, 4:6].mean().astype(np.uint16)
    with pytest.raises(ValueError, match="1.5"):
        sim.bin_native(image, 1.5)
