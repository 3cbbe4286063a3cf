import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import test_gallery

from cellstudy import cpjump1, embed, gallery, settings, simulate, train
from cellstudy.fieldstore import read_field_table
from cellstudy.images import list_fields, write_field

endpoint, bucket, loopback_only = test_gallery.endpoint, test_gallery.bucket, test_gallery.loopback_only
"""Fixtures of test_gallery: a moto S3 server on loopback filled in the Gallery's layout, and a guard that
keeps this module off every other host."""
METADATA, WELLS, FIELDS = test_gallery.METADATA, test_gallery.WELLS, test_gallery.FIELDS


def test_every_profile_has_a_simulation_and_quick_is_smaller():
    configs = {profile: settings.simulation_config(profile) for profile in settings.PROFILES}
    assert configs["quick"].image_size < configs["default"].image_size
    assert configs["quick"].n_genes < configs["default"].n_genes
    assert configs["default"] == simulate.SimulationConfig()


def test_unknown_profile_is_named():
    with pytest.raises(ValueError, match="'huge'"):
        settings.simulation_config("huge")


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_training_profiles_grow_from_quick_to_full(method):
    quick, default, full = (settings.training_config(method, profile) for profile in settings.PROFILES)
    assert quick.method == default.method == full.method == method
    assert quick.train.steps < default.train.steps < full.train.steps
    assert full == train.default_config(method, "gpu-vit-s16-224")
    cpu = train.default_config(method, "cpu")
    assert (default.encoder, default.mae, default.dino) == (cpu.encoder, cpu.mae, cpu.dino)
    jitter = {"intensity_jitter": cpu.crops.intensity_jitter, "gamma_jitter": cpu.crops.gamma_jitter}
    assert replace(default.crops, **jitter) == cpu.crops


def test_default_dino_drops_intensity_jitter_only():
    crops = settings.training_config("dino", "default").crops
    assert crops.intensity_jitter == crops.gamma_jitter == 0.0 and crops.flips
    assert settings.training_config("mae", "default").crops.intensity_jitter > 0


def test_real_field_runs_take_a_share_of_the_steps():
    screen, real = settings.training_config("mae", "default"), settings.training_config("mae", "default", True)
    assert real.train.steps == round(screen.train.steps * settings.REAL_FIELD_STEPS)
    assert real.train.warmup_steps < real.train.steps
    assert settings.training_config("dino", "quick", real_fields=True).train.steps >= 1
    with pytest.raises(ValueError, match="'huge'"):
        settings.training_config("mae", "huge")


def test_model_dirs_are_per_method_and_image_source(tmp_path):
    assert settings.model_dir(tmp_path, "dino") == tmp_path / "models" / "dino"
    assert settings.model_dir(tmp_path, "mae", real_fields=True) == tmp_path / "models" / "mae_real"


def test_a_checkpoint_is_resumable_only_by_its_own_config(tmp_path):
    config = train.apply_overrides(settings.training_config("mae", "quick"), {
        "encoder": {"depth": 1, "img_size": 32}, "crops": {"global_size": 32, "region_size": 32},
        "train": {"steps": 1, "batch_size": 2, "device": "cpu"}})
    assert not settings.resumable(tmp_path, config)
    field = np.random.default_rng(0).poisson(100, size=(5, 64, 64)).astype(np.uint16)
    train.train(config, [field], tmp_path, progress=False)
    assert settings.resumable(tmp_path, config)
    assert settings.resumable(tmp_path, train.apply_overrides(config, {"train": {"num_workers": 1}}))
    assert not settings.resumable(tmp_path, train.apply_overrides(config, {"train": {"base_lr": 1e-4}}))


def test_simulated_screen_is_loaded_when_it_matches_and_remade_otherwise(tmp_path, monkeypatch):
    tiny = replace(simulate.QUICK_CONFIG, n_genes=1, n_replicate_plates=1, negcon_wells_per_plate=1,
                   image_size=48, modalities=("orf",), n_workers=1)
    monkeypatch.setattr(settings, "simulation_config", lambda profile, metadata_folder=None: tiny)
    calls = []
    real_simulate = simulate.simulate
    monkeypatch.setattr(simulate, "simulate",
                        lambda *args, **kwargs: calls.append(args) or real_simulate(*args, **kwargs))
    first = settings.simulated_screen("quick", tmp_path, progress=False)
    again = settings.simulated_screen("quick", tmp_path, progress=False)
    assert len(calls) == 1 and again.out_dir == first.out_dir == settings.simulation_dir(tmp_path)
    assert again.wells[["Metadata_Plate", "Metadata_Well"]].equals(first.wells[["Metadata_Plate", "Metadata_Well"]])
    stale = first.image_folder / "SIM_OLD" / "r01c01f01p01-ch1sk1fk1fl1.tiff"
    stale.parent.mkdir()
    stale.touch()
    monkeypatch.setattr(settings, "simulation_config", lambda profile, metadata_folder=None: replace(tiny, seed=1))
    settings.simulated_screen("quick", tmp_path, progress=False)
    assert len(calls) == 2 and not stale.exists()


def test_pretraining_fields_are_a_seeded_sample_in_table_order():
    table = pd.DataFrame({"folder": "f", "well": [f"A{i:02d}" for i in range(1, 501)], "field": 1})
    sample = settings.pretraining_fields(table, "default")
    assert len(sample) == settings.PRETRAINING_FIELDS["default"] < len(table)
    assert sample.index.is_monotonic_increasing and sample.equals(settings.pretraining_fields(table, "default"))
    assert settings.pretraining_fields(table, "quick") is table


def test_well_profiles_are_one_file_per_method_in_the_profiles_dir(tmp_path):
    paths = [settings.well_profiles_path(tmp_path, method) for method in settings.PROFILE_METHODS]
    assert settings.profiles_dir(tmp_path) == tmp_path / "profiles"
    assert all(path.parent == tmp_path / "profiles" for path in paths)
    assert len(set(paths)) == len(settings.PROFILE_METHODS)
    assert settings.well_profiles_path(tmp_path, "dino") == tmp_path / "profiles" / "dino_wells.csv"
    processed = settings.well_profiles_path(tmp_path, "dino", processed=True)
    assert processed.parent == tmp_path / "profiles" and processed not in paths
    with pytest.raises(ValueError, match="'simclr'"):
        settings.well_profiles_path(tmp_path, "simclr")


def test_classical_wells_live_beside_the_simulated_screen(tmp_path):
    path = settings.simulation_dir(tmp_path) / settings.CLASSICAL_WELLS
    assert path == tmp_path / "simulated" / "classical_wells.csv"
    assert path.parent != settings.profiles_dir(tmp_path)


def test_retrieval_nulls_cover_every_profile_and_default_to_the_papers_size():
    assert set(settings.MAP_NULL_SIZE) == set(settings.PROFILES)
    assert settings.MAP_NULL_SIZE["quick"] < settings.MAP_NULL_SIZE["default"] == 100_000


def test_full_plates_are_the_u2os_long_plates_of_every_modality():
    conditions = cpjump1.plate_conditions(METADATA)
    chosen = conditions[(conditions["Metadata_cell_type"] == "U2OS")
                        & (simulate.timepoint_labels(conditions, METADATA) == "long")]
    assert sorted(settings.FULL_PLATES) == sorted(chosen["Metadata_Plate"])
    assert sorted(chosen["Metadata_modality"].unique()) == sorted(cpjump1.MODALITIES)
    assert simulate.SimulationConfig().cell_types == ("U2OS",) and simulate.SimulationConfig().timepoints == ("long",)
    wells = cpjump1.well_table(METADATA, settings.FULL_PLATES).query("Metadata_pert_type != 'empty'")
    assert len(wells) * len(settings.FULL_FIELDS) == 15_264  # the download size stated in FULL_FIELDS


def test_gallery_downloads_live_in_the_build(tmp_path):
    assert settings.gallery_dir(tmp_path) == tmp_path / "gallery"


def test_simulated_profiles_screen_the_simulated_fields(tmp_path, monkeypatch):
    tiny = replace(simulate.QUICK_CONFIG, n_genes=1, n_replicate_plates=1, negcon_wells_per_plate=1,
                   image_size=48, modalities=("orf",), n_workers=1)
    monkeypatch.setattr(settings, "simulation_config", lambda profile, metadata_folder=None: tiny)
    table = settings.screen_fields("quick", tmp_path, progress=False)
    loaded = simulate.SimulationResult.load(settings.simulation_dir(tmp_path)).field_table()
    pd.testing.assert_frame_equal(table, loaded, check_dtype=False)  # a fresh screen's empty columns are str


def test_full_screen_is_downloaded_from_the_configured_endpoint_then_loaded(tmp_path, monkeypatch, endpoint, bucket):
    monkeypatch.setenv(gallery.ENDPOINT_VARIABLE, endpoint)
    monkeypatch.setattr(settings, "FULL_PLATES", ("BR00116991",))
    monkeypatch.setattr(settings, "FULL_FIELDS", tuple(FIELDS))
    monkeypatch.setattr(settings, "FULL_WELLS", tuple(WELLS))
    downloads = []
    real_download = gallery.download_screen
    monkeypatch.setattr(gallery, "download_screen",
                        lambda *args, **kwargs: downloads.append(args) or real_download(*args, **kwargs))

    table = settings.screen_fields("full", tmp_path, metadata_folder=METADATA, progress=False)
    assert [tuple(key) for key in table[["folder", "well", "field"]].itertuples(index=False)] == [
        (str(tmp_path / "gallery" / "BR00116991"), well, field) for well in sorted(WELLS) for field in FIELDS]
    images, _ = embed.read_fields(table, progress=False)
    assert all(np.array_equal(image, bucket["images"][("BR00116991", well, field)])
               for image, (well, field) in zip(images, table[["well", "field"]].itertuples(index=False)))

    monkeypatch.delenv(gallery.ENDPOINT_VARIABLE)  # a complete screen is loaded without the network
    pd.testing.assert_frame_equal(settings.screen_fields("full", tmp_path, metadata_folder=METADATA), table)
    assert len(downloads) == 1
    monkeypatch.setenv(gallery.ENDPOINT_VARIABLE, endpoint)
    monkeypatch.setattr(settings, "FULL_FIELDS", (1,))  # another selection is downloaded again
    assert settings.screen_fields("full", tmp_path, metadata_folder=METADATA, progress=False)["field"].tolist() == [1, 1]
    assert len(downloads) == 2


def test_full_profile_reads_published_classical_profiles_and_has_no_oracle(tmp_path):
    assert settings.classical_wells_path("default", tmp_path) == settings.simulation_dir(tmp_path) / "classical_wells.csv"
    assert settings.classical_wells_path("full", tmp_path) == tmp_path / "gallery" / "classical_wells.csv"
    assert settings.profile_methods("quick") == list(settings.PROFILE_METHODS)
    assert settings.profile_methods("full") == [m for m in settings.PROFILE_METHODS if m != "oracle"]


def test_full_profile_pretrains_from_disk_as_the_default_does_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    for well, field in (("A01", 1), ("A01", 2), ("D14", 1)):
        write_field(tmp_path / "P1", well, field, rng.poisson(200, (5, 64, 72)).astype(np.uint16))
    table = list_fields(tmp_path / "P1")
    config = train.apply_overrides(train.default_config("mae", "cpu"),
                                   {"train": {"steps": 2, "batch_size": 2, "device": "cpu"}})
    steps = {profile: settings.pretrain(config, table, tmp_path / profile, profile)
             for profile in ("default", "full")}  # no GPU here: full trains in this process from a FieldStore
    assert steps == {"default": 2, "full": 2}
    weights = {profile: torch.load(tmp_path / profile / train.ENCODER, weights_only=True)["encoder"]
               for profile in steps}
    assert all(torch.equal(weights["full"][name], tensor) for name, tensor in weights["default"].items())


def test_full_profile_on_several_gpus_runs_torchrun_on_the_training_table(tmp_path, monkeypatch):
    table = pd.DataFrame({"folder": [str(tmp_path / "P1")] * 2, "well": ["A01", "B02"], "field": [1, 1]})
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(settings.cli, "torchrun_train", lambda *args, **options: calls.append((args, options)))
    monkeypatch.setattr(settings.train, "load_encoder", lambda path: type("Encoder", (), {"step": 7}))
    config = train.default_config("mae", "cpu")
    assert settings.pretrain(config, table, tmp_path / "model", "full") == 7
    (used_config, table_path, model_dir, n_processes), options = calls[0]
    assert (used_config, model_dir, n_processes, options) == (config, tmp_path / "model", 4, {"resume": False})
    written = read_field_table(table_path)[["folder", "well", "field"]]
    pd.testing.assert_frame_equal(written.assign(folder=written["folder"].map(os.path.normpath)), table)
