"""Tests for cellstudy.study: the run sizes and the study object (folders, settings per size, the screen)."""

import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import test_gallery
import torch

from cellstudy.columns import DECODED_FIELD
from cellstudy.data import cpjump1, gallery
from cellstudy.data.decodedstore import convert_fields
from cellstudy.data.fieldstore import read_field_table
from cellstudy.data.images import list_fields, read_field, write_field
from cellstudy.profiling import embed
from cellstudy.simulation import simulate
from cellstudy.study import Study, runsize
from cellstudy.study import study as study_module
from cellstudy.study.runsize import DEFAULT, FULL, QUICK, GallerySelection
from cellstudy.training import train

endpoint, bucket, loopback_only, s3_server = (
    test_gallery.endpoint,
    test_gallery.bucket,
    test_gallery.loopback_only,
    test_gallery.s3_server,
)
"""Fixtures of test_gallery: a moto S3 server on loopback filled in the Gallery's layout, and a guard that
keeps this module off every other host."""
METADATA, WELLS, FIELDS = test_gallery.METADATA, test_gallery.WELLS, test_gallery.FIELDS


def study_of(size, build=".", **changes):
    """A study of run size ``size`` (a name or a RunSize), with ``changes`` made by dataclasses.replace."""
    size = runsize.run_size(size)
    return Study.create(replace(size, **changes) if changes else size, build)


def test_every_run_size_has_a_simulation_and_quick_is_smaller():
    assert QUICK.simulation.image_size < DEFAULT.simulation.image_size
    assert QUICK.simulation.n_genes < DEFAULT.simulation.n_genes
    assert DEFAULT.simulation == simulate.SimulationConfig()
    assert set(runsize.RUN_SIZES) == {"quick", "default", "full", "full-rehearsal"}


def test_unknown_run_size_is_named():
    with pytest.raises(ValueError, match="'huge'"):
        runsize.run_size("huge")


def test_a_run_size_cannot_be_changed_in_place_only_replaced():
    with pytest.raises(AttributeError):
        DEFAULT.map_null_size = 1
    with pytest.raises(TypeError):
        DEFAULT.dino["train"]["batch_size"] = 1
    assert replace(DEFAULT, map_null_size=1).map_null_size == 1 and DEFAULT.map_null_size == 100_000


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_training_configs_grow_from_quick_to_full(method):
    quick, default, full = (study_of(size).training_config(method) for size in ("quick", "default", "full"))
    assert quick.method == default.method == full.method == method
    assert quick.train.steps < default.train.steps < full.train.steps
    assert full == train.default_config(method, "gpu-vit-s16-224")
    cpu = train.default_config(method, "cpu")
    assert (default.encoder, default.mae, default.dino) == (cpu.encoder, cpu.mae, cpu.dino)
    jitter = {"intensity_jitter": cpu.crops.intensity_jitter, "gamma_jitter": cpu.crops.gamma_jitter}
    assert replace(default.crops, **jitter) == cpu.crops


def test_default_dino_drops_intensity_jitter_only():
    crops = study_of("default").training_config("dino").crops
    assert crops.intensity_jitter == crops.gamma_jitter == 0.0 and crops.flips
    assert study_of("default").training_config("mae").crops.intensity_jitter > 0
    assert study_of("default").training_config("dino").train.batch_size == DEFAULT.dino["train"]["batch_size"] == 24


def test_real_field_runs_take_a_share_of_the_steps():
    default = study_of("default")
    screen, real = default.training_config("mae"), default.training_config("mae", real_fields=True)
    assert real.train.steps == round(screen.train.steps * DEFAULT.real_field_steps)
    assert real.train.warmup_steps < real.train.steps
    assert study_of("quick").training_config("dino", real_fields=True).train.steps >= 1
    with pytest.raises(ValueError, match="'simclr'"):
        default.training_config("simclr")


def test_model_dirs_are_per_method_and_image_source(tmp_path):
    assert study_of("default", tmp_path).model_dir("dino") == tmp_path / "models" / "dino"
    assert study_of("default", tmp_path).model_dir("mae", real_fields=True) == tmp_path / "models" / "mae_real"


def test_a_checkpoint_is_resumable_only_by_its_own_config(tmp_path):
    config = train.apply_overrides(
        study_of("quick").training_config("mae"),
        {
            "encoder": {"depth": 1, "img_size": 32},
            "crops": {"global_size": 32, "region_size": 32},
            "train": {"steps": 1, "batch_size": 2, "device": "cpu"},
        },
    )
    assert not train.resumable(tmp_path, config)
    field = np.random.default_rng(0).poisson(100, size=(5, 64, 64)).astype(np.uint16)
    train.train(config, [field], tmp_path, progress=False)
    assert train.resumable(tmp_path, config)
    assert train.resumable(tmp_path, train.apply_overrides(config, {"train": {"num_workers": 1}}))
    assert not train.resumable(tmp_path, train.apply_overrides(config, {"train": {"base_lr": 1e-4}}))


TINY = replace(
    simulate.QUICK_CONFIG,
    n_genes=1,
    n_replicate_plates=1,
    negcon_wells_per_plate=1,
    image_size=48,
    modalities=("orf",),
    n_workers=1,
)


def test_simulated_screen_is_loaded_when_it_matches_and_remade_otherwise(tmp_path, monkeypatch):
    calls = []
    real_simulate = simulate.simulate
    monkeypatch.setattr(
        simulate, "simulate", lambda *args, **kwargs: calls.append(args) or real_simulate(*args, **kwargs)
    )
    study = study_of("quick", tmp_path, simulation=TINY)
    first = study.simulated_screen(progress=False)
    again = study.simulated_screen(progress=False)
    assert len(calls) == 1 and again.out_dir == first.out_dir == study.simulation_dir
    assert again.wells[["Metadata_Plate", "Metadata_Well"]].equals(first.wells[["Metadata_Plate", "Metadata_Well"]])
    stale = first.image_folder / "SIM_OLD" / "r01c01f01p01-ch1sk1fk1fl1.tiff"
    stale.parent.mkdir()
    stale.touch()
    study_of("quick", tmp_path, simulation=replace(TINY, seed=1)).simulated_screen(progress=False)
    assert len(calls) == 2 and not stale.exists()


def test_pretraining_fields_are_a_seeded_sample_in_table_order():
    table = pd.DataFrame({"folder": "f", "well": [f"A{i:02d}" for i in range(1, 501)], "field": 1})
    sample = study_of("default").pretraining_fields(table)
    assert len(sample) == DEFAULT.pretraining_fields < len(table)
    assert sample.index.is_monotonic_increasing and sample.equals(study_of("default").pretraining_fields(table))
    assert study_of("quick").pretraining_fields(table) is table


def test_well_profiles_are_one_file_per_method_in_the_profiles_dir(tmp_path):
    study = study_of("default", tmp_path)
    paths = [study.well_profiles_path(method) for method in study_module.PROFILING_METHODS]
    assert study.profiles_dir == tmp_path / "profiles"
    assert all(path.parent == tmp_path / "profiles" for path in paths)
    assert len(set(paths)) == len(study_module.PROFILING_METHODS)
    assert study.well_profiles_path("dino") == tmp_path / "profiles" / "dino_wells.csv"
    processed = study.well_profiles_path("dino", processed=True)
    assert processed.parent == tmp_path / "profiles" and processed not in paths
    with pytest.raises(ValueError, match="'simclr'"):
        study.well_profiles_path("simclr")


def test_classical_wells_live_beside_the_simulated_screen(tmp_path):
    study = study_of("default", tmp_path)
    assert study.classical_wells_path() == tmp_path / "simulated" / "classical_wells.csv"
    assert study.classical_wells_path().parent != study.profiles_dir


def test_retrieval_nulls_default_to_the_papers_size():
    assert QUICK.map_null_size < DEFAULT.map_null_size == FULL.map_null_size == 100_000
    assert study_of("default").map_settings().null_size == 100_000
    assert study_of("default").map_settings().method == "study"
    assert study_of("quick").map_settings(method="paper").method == "paper"


def test_full_plates_are_the_u2os_long_plates_of_every_modality():
    conditions = cpjump1.plate_conditions(METADATA)
    chosen = conditions[
        (conditions["Metadata_cell_type"] == "U2OS") & (simulate.timepoint_labels(conditions, METADATA) == "long")
    ]
    assert sorted(FULL.gallery.plates) == sorted(chosen["Metadata_Plate"])
    assert sorted(chosen["Metadata_modality"].unique()) == sorted(cpjump1.MODALITIES)
    assert simulate.SimulationConfig().cell_types == ("U2OS",) and simulate.SimulationConfig().timepoints == ("long",)
    wells = cpjump1.well_table(METADATA, FULL.gallery.plates).query("Metadata_pert_type != 'empty'")
    assert len(wells) * len(FULL.gallery.fields) == 15_264  # fields the full run size downloads


FULL_PLATE_ANOMALIES = {
    "BR00117010": "Mitotracker",
    "BR00117011": "none",
    "BR00117012": "none",
    "BR00117013": "Mitotracker",
    "BR00116996": "WGA",
    "BR00116997": "WGA",
    "BR00116998": "WGA",
    "BR00116999": "WGA",
    "BR00118039": "Phalloidin",
    "BR00118040": "Phalloidin",
}
"""The Anomaly column of CPJUMP1's experiment-metadata.tsv for the full run size's plates."""


def test_full_run_keeps_anomalous_plates_unless_told_to_exclude_them(tmp_path):
    assert study_of("full").gallery_plates() == list(FULL_PLATE_ANOMALIES)
    excluding = study_of("full", gallery=replace(FULL.gallery, exclude_anomalous=True))
    assert excluding.gallery_plates() == [plate for plate, anomaly in FULL_PLATE_ANOMALIES.items() if anomaly == "none"]
    crispr_only = replace(FULL.gallery, plates=("BR00116996", "BR00116997"), exclude_anomalous=True)
    with pytest.raises(ValueError, match="every plate of run size full has a staining anomaly"):
        study_of("full", gallery=crispr_only).gallery_plates()
    with pytest.raises(ValueError, match="run size default reads no plates"):
        study_of("default").gallery_plates()


def test_gallery_downloads_live_in_the_build(tmp_path):
    assert study_of("full", tmp_path).gallery_dir == tmp_path / "gallery"


def test_data_labels_name_the_screen():
    assert (study_of("default").data_label, study_of("default").screen_label) == ("simulated", "simulated screen")
    assert (study_of("full").data_label, study_of("full").screen_label) == ("CPJUMP1", "CPJUMP1 screen")


def test_tables_are_saved_atomically_under_the_notebooks_results(tmp_path):
    study = Study.create("quick", tmp_path, notebook="06_evaluation")
    path = study.save_table(pd.DataFrame({"a": [1, 2]}), "summary")
    assert path == tmp_path / "results" / "06_evaluation" / "summary.csv"
    assert study.read_result("06_evaluation", "summary")["a"].tolist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["summary.csv"]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="run notebook 05_embedding first"):
        study.read_result("05_embedding", "profiles_overview")


@pytest.mark.parametrize("size", ["quick", "full"])
def test_simulated_profiles_screen_the_simulated_fields_through_the_decoded_store(tmp_path, size):
    """The quick study's screen; the simulated benchmark's fields of the full study, whose screen is the Gallery's."""
    study = study_of(size, tmp_path, simulation=TINY)
    table = (
        study.screen_fields(progress=False)
        if size == "quick"
        else study.simulated_fields(study.simulated_screen(False))
    )
    loaded = simulate.SimulationResult.load(study.simulation_dir).field_table()
    pd.testing.assert_frame_equal(
        table.drop(columns=DECODED_FIELD), loaded, check_dtype=False
    )  # a fresh screen's empty columns are str
    assert all(path.startswith(str(tmp_path / "simulated" / "decoded")) for path in table[DECODED_FIELD])
    from_store, _ = embed.read_fields(table, progress=False)
    from_tiffs = [read_field(row.folder, row.well, row.field) for row in loaded.itertuples()]
    assert [image.tobytes() for image in from_store] == [image.tobytes() for image in from_tiffs]


def test_full_screen_is_downloaded_from_the_configured_endpoint_then_loaded(tmp_path, monkeypatch, endpoint, bucket):
    absent = test_gallery.ABSENT_FILE[:3]
    monkeypatch.setenv(gallery.ENDPOINT_VARIABLE, endpoint)
    selection = GallerySelection(plates=("BR00116991",), fields=tuple(FIELDS), wells=tuple(WELLS))
    study = Study(replace(FULL, gallery=selection), tmp_path, METADATA.parent.parent)
    downloads = []
    real_download = gallery.download_screen
    monkeypatch.setattr(
        gallery, "download_screen", lambda *args, **kwargs: downloads.append(args) or real_download(*args, **kwargs)
    )

    table = study.screen_fields(progress=False)
    complete = [(well, field) for well in sorted(WELLS) for field in FIELDS if ("BR00116991", well, field) != absent]
    assert [tuple(key) for key in table[["folder", "well", "field"]].itertuples(index=False)] == [
        (str(tmp_path / "gallery" / "BR00116991"), well, field) for well, field in complete
    ]  # the field that lacks a channel in the bucket is left out
    assert set(table["Metadata_anomaly"]) == {"WGA"}
    images, _ = embed.read_fields(table, progress=False)
    assert all(
        np.array_equal(image, bucket["images"][("BR00116991", well, field)])
        for image, (well, field) in zip(images, table[["well", "field"]].itertuples(index=False))
    )

    monkeypatch.delenv(gallery.ENDPOINT_VARIABLE)  # a complete screen is loaded without the network
    pd.testing.assert_frame_equal(study.screen_fields(), table)
    assert len(downloads) == 1
    monkeypatch.setenv(gallery.ENDPOINT_VARIABLE, endpoint)
    other = Study(replace(FULL, gallery=replace(selection, fields=(1,))), tmp_path, METADATA.parent.parent)
    assert other.screen_fields(progress=False)["field"].tolist() == [1, 1]  # another selection is downloaded again
    assert len(downloads) == 2


def test_full_run_size_reads_published_classical_profiles_and_has_no_oracle(tmp_path):
    assert study_of("default", tmp_path).classical_wells_path() == tmp_path / "simulated" / "classical_wells.csv"
    assert study_of("full", tmp_path).classical_wells_path() == tmp_path / "gallery" / "classical_wells.csv"
    simulated = tmp_path / "simulated" / "classical_wells.csv"  # the simulated benchmark's, at every size
    assert study_of("full", tmp_path).classical_wells_path(simulated=True) == simulated
    assert study_of("quick").methods() == list(study_module.PROFILING_METHODS)
    assert study_of("full").methods() == [m for m in study_module.PROFILING_METHODS if m != "oracle"]
    assert study_of("quick", planted_truth=False).methods() == study_of("full").methods()


def test_full_run_size_pretrains_from_disk_as_the_default_does_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    for well, field in (("A01", 1), ("A01", 2), ("D14", 1)):
        write_field(tmp_path / "P1", well, field, rng.poisson(200, (5, 64, 72)).astype(np.uint16))
    table = list_fields(tmp_path / "P1")
    config = train.apply_overrides(
        train.default_config("mae", "cpu"), {"train": {"steps": 2, "batch_size": 2, "device": "cpu"}}
    )
    decoded = convert_fields(table, tmp_path / "decoded", n_workers=1, progress=False)
    steps = {
        size: study_of(size).pretrain(config, table, tmp_path / size) for size in ("default", "full")
    }  # without several GPUs, full trains in this process from a FieldStore
    steps["full, decoded"] = study_of("full").pretrain(config, decoded, tmp_path / "full, decoded")
    assert steps == {"default": 2, "full": 2, "full, decoded": 2}
    weights = {size: torch.load(tmp_path / size / train.ENCODER, weights_only=True)["encoder"] for size in steps}
    assert all(torch.equal(weights["full"][name], tensor) for name, tensor in weights["default"].items())


@pytest.mark.parametrize(("size", "gpus", "processes"), [("full", 4, 4), ("full-rehearsal", 0, 2)])
def test_full_run_size_on_several_gpus_runs_torchrun_on_the_training_table(
    tmp_path, monkeypatch, size, gpus, processes
):
    """One process per GPU; the rehearsal's two CPU processes without a GPU."""
    table = pd.DataFrame({"folder": [str(tmp_path / "P1")] * 2, "well": ["A01", "B02"], "field": [1, 1]})
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(
        study_module.distributed, "torchrun_train", lambda *args, **options: calls.append((args, options))
    )
    monkeypatch.setattr(study_module.train, "load_encoder", lambda path: type("Encoder", (), {"step": 7}))
    config = train.default_config("mae", "cpu")
    assert study_of(size).pretrain(config, table, tmp_path / "model") == 7
    (used_config, table_path, model_dir, n_processes), options = calls[0]
    assert (used_config, model_dir, n_processes, options) == (config, tmp_path / "model", processes, {"resume": False})
    written = read_field_table(table_path)[["folder", "well", "field"]]
    pd.testing.assert_frame_equal(written.assign(folder=written["folder"].map(os.path.normpath)), table)
