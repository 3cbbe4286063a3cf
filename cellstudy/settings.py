"""Run profiles of the study: what each notebook does at ``quick``, ``default`` and ``full`` size.

- ``quick``: a smoke run of every notebook in a few minutes (the notebook tests use it).
- ``default``: the study as published in the book, sized for a 2-core laptop.
- ``full``: the full CPJUMP1 data on GPUs: the Cell Painting Gallery's images of :data:`FULL_PLATES`
  (:func:`screen_fields`; set ``CELLSTUDY_GALLERY_ENDPOINT`` to download from a mirror, see
  :func:`cellstudy.gallery.config_from_env`).

Notebooks take ``profile`` as a papermill parameter and ask this module for their settings, so the
book's methods chapter can report exactly the settings that were used.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from cellstudy import cli, embed, gallery, simulate, train
from cellstudy.fieldstore import FIELD_KEY, FieldStore, read_field_table, write_field_table

PROFILES = ("quick", "default", "full")


def check_profile(profile: str) -> str:
    """``profile`` itself, or a ``ValueError`` listing the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return profile


def simulation_config(profile: str, metadata_folder: str | None = None) -> simulate.SimulationConfig:
    """The simulated CPJUMP1 screen of a profile (``full`` uses real images, so it simulates the default)."""
    config = simulate.QUICK_CONFIG if check_profile(profile) == "quick" else simulate.SimulationConfig()
    return replace(config, metadata_folder=metadata_folder)


def simulation_dir(build_dir: str | Path) -> Path:
    """Where the simulated screen of a build lives (written by the simulated-benchmark notebook)."""
    return Path(build_dir) / "simulated"


def simulated_screen(
    profile: str, build_dir: str | Path, metadata_folder: str | None = None, progress: bool = True
) -> simulate.SimulationResult:
    """The profile's simulated screen in :func:`simulation_dir`.

    Loaded if a complete screen of the profile's configuration is there (where
    the CPJUMP1 metadata were read from does not count), otherwise simulated,
    replacing a screen of another configuration (its images are deleted first).
    """
    config, folder = simulation_config(profile, metadata_folder), simulation_dir(build_dir)
    summary = folder / simulate.SUMMARY_FILE
    if summary.exists() and _without_source(json.loads(summary.read_text())["config"]) == _without_source(
        config.to_dict()
    ):
        return simulate.SimulationResult.load(folder)
    summary.unlink(missing_ok=True)  # the old screen is incomplete from here on
    shutil.rmtree(folder / simulate.IMAGE_FOLDER, ignore_errors=True)
    return simulate.simulate(config, folder, progress=progress)


def _without_source(config: dict) -> dict:
    """A simulation config dict without ``metadata_folder``."""
    return {key: value for key, value in config.items() if key != "metadata_folder"}


TRAINING_PROFILE = {"quick": "cpu", "default": "cpu", "full": "gpu-vit-s16-224"}
"""The :func:`cellstudy.train.default_config` profile each run profile starts from."""
NO_INTENSITY_JITTER = {"intensity_jitter": 0.0, "gamma_jitter": 0.0}
"""Crop settings that keep flips and crops but drop the per-channel intensity and gamma jitter."""
TRAINING_OVERRIDES = {
    ("quick", "mae"): {"train": {"steps": 8, "warmup_steps": 2, "batch_size": 16, "checkpoint_every": 8}},
    ("quick", "dino"): {"train": {"steps": 4, "warmup_steps": 1, "batch_size": 8, "checkpoint_every": 4}},
    ("default", "mae"): {"train": {"steps": 250, "warmup_steps": 20}},
    ("default", "dino"): {"train": {"steps": 200, "warmup_steps": 20, "batch_size": 24}, "crops": NO_INTENSITY_JITTER},
}
"""Changes to the training profile per (run profile, method). ``quick``: a few steps, seconds.
``default``: the CPU profile cut to about 2 minutes per model on 2 idle cores (MAE about 0.45 s per
step of 128 crops, the images of 500 steps of 64 that left its loss flat after about 100 of them; DINO about
0.6 s per step of 24 samples of 6 views), so that a pre-training notebook, with its kNN check of every tile
(about 2 minutes), runs in under 5 minutes. DINO's batch of 24 instead of 32 is for that budget: 200 steps
of 32 took about 150 s, and the notebook 324 s; the check gave 0.047 with 24 and 0.054 with 32 (random
initialisation 0.035), a difference within its noise. Fewer steps or fewer local crops cost more (150
steps of 32: 0.045; two local crops: 0.036). DINO trains without intensity and gamma jitter: on the first
version of the simulated screen the jitter taught it to ignore the intensity changes that carry much of the
planted phenotype (kNN accuracy 0.048 with jitter, 0.069 without; random initialisation 0.073); this was not
measured again on the current screen. ``full``: the GPU profile unchanged."""
REAL_FIELD_STEPS = 0.2
"""Share of a profile's steps used to pre-train on the ten real fields (far fewer images than the screen)."""


def training_config(method: str, profile: str, real_fields: bool = False) -> train.ExperimentConfig:
    """Pre-training configuration of ``method`` (``mae`` or ``dino``) under a run profile.

    ``real_fields`` shortens the run to :data:`REAL_FIELD_STEPS` of the steps (and warm-up).
    """
    config = train.default_config(method, TRAINING_PROFILE[check_profile(profile)])
    config = train.apply_overrides(config, TRAINING_OVERRIDES.get((profile, method), {}), f"profile {profile}")
    if not real_fields:
        return config
    steps = max(1, round(config.train.steps * REAL_FIELD_STEPS))
    warmup = round(config.train.warmup_steps * REAL_FIELD_STEPS)
    return train.apply_overrides(config, {"train": {"steps": steps, "warmup_steps": warmup}})


def model_dir(build_dir: str | Path, method: str, real_fields: bool = False) -> Path:
    """Where a build's pre-trained model lives: ``models/<method>`` (``models/<method>_real`` for the real fields)."""
    return Path(build_dir) / "models" / (f"{method}_real" if real_fields else method)


def resumable(out_dir: str | Path, config: train.ExperimentConfig) -> bool:
    """Whether ``out_dir`` holds a checkpoint of ``config`` to resume (not one of another profile).

    Pass it as :func:`cellstudy.train.train`'s ``resume``: a build whose profile
    changed then retrains instead of refusing the old checkpoint.
    """
    checkpoint = Path(out_dir) / train.CHECKPOINT
    if not checkpoint.exists():
        return False
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]
    return train.resume_signature(saved) == train.resume_signature(config.to_dict())


PRETRAINING_FIELDS = {"quick": None, "default": 320, "full": None}
"""Fields of the simulated screen that pre-training reads (a seeded random sample; ``None``: all). The
default profile's runs see each of them about a hundred times; more fields would only cost memory and
loading time."""


def pretraining_fields(field_table: pd.DataFrame, profile: str, seed: int = 0) -> pd.DataFrame:
    """The rows of a screen's field table that a profile pre-trains on (:data:`PRETRAINING_FIELDS`), in table order."""
    count = PRETRAINING_FIELDS[check_profile(profile)]
    if count is None or count >= len(field_table):
        return field_table
    return field_table.sample(count, random_state=seed).sort_index()


CLASSICAL_WELLS = "classical_wells.csv"
"""File name of the classical (cp-measure) well profiles in :func:`simulation_dir`, written by the
simulated-benchmark notebook."""
PROFILE_METHODS = {"dino": "DINO", "mae": "MAE", "random_vit": "random ViT", "pixel_stats": "pixel statistics",
                   "classical": "classical", "oracle": "oracle"}
"""The profiling methods compared, each with its label in figures and text: the embedding notebook writes
one well-profile table per method, the evaluation notebook scores them."""
MAP_NULL_SIZE = {"quick": 10_000, "default": 100_000, "full": 100_000}
"""Draws in each permutation null of the retrieval tasks (:class:`cellstudy.evaluate.MapSettings`); the
paper used 100,000."""
EMBEDDING_BATCH_SIZE = 256
"""Tiles per encoder call in the embedding notebook and the pre-training notebooks' kNN check (the profiles
do not depend on it; on 2 CPU cores batches of 256 tiles embed about 1.5 times faster per tile than
batches of 64)."""


def profiles_dir(build_dir: str | Path) -> Path:
    """Where a build's well-profile tables live (written by the embedding notebook)."""
    return Path(build_dir) / "profiles"


def well_profiles_path(build_dir: str | Path, method: str, processed: bool = False) -> Path:
    """The well-profile table of ``method`` (one of :data:`PROFILE_METHODS`) in :func:`profiles_dir`.

    ``<method>_wells.csv`` as the method makes them; with ``processed``, ``<method>_wells_processed.csv``
    after the study's post-processing (:func:`cellstudy.profiles.postprocessing_for`).
    """
    if method not in PROFILE_METHODS:
        raise ValueError(f"unknown profiling method {method!r}; choose one of {list(PROFILE_METHODS)}")
    return profiles_dir(build_dir) / (f"{method}_wells_processed.csv" if processed else f"{method}_wells.csv")


def consensus_profiles_path(build_dir: str | Path, method: str) -> Path:
    """The consensus-profile table (one row per perturbation, post-processed) of ``method`` in
    :func:`profiles_dir`, written by the applications notebook for ``cellstudy query``."""
    return well_profiles_path(build_dir, method).with_name(f"{method}_consensus.csv")


QUERY_METHODS = ("dino", "mae", "classical", "oracle")
"""Profiles the applications notebook queries (the learned ones, the classical baseline, the planted oracle)."""
LABEL_EFFICIENCY_OVERRIDES = {
    "quick": {"seeds": (0,), "tiles_per_field": 1, "fine_tuning": {"steps": 2, "batch_size": 8}},
    "default": {"seeds": (0, 1), "tiles_per_field": 2, "fine_tuning": {"steps": 15, "batch_size": 16}},
    "full": {},
}
"""Changes to :class:`cellstudy.label_efficiency.LabelEfficiencyConfig` per run profile (apply them with
:func:`cellstudy.train.apply_overrides`). ``quick``: one seed, two fine-tuning steps. ``default``: two seeds,
two tiles per field, fine-tuning cut to 15 steps of 16 tiles (about two passes over the tiles of one well per
gene). Fine-tuning dominates the cost: with 6 training wells per gene the five label fractions give three
distinct training sets (1, 2 and 6 wells per gene), so each seed fine-tunes 3 x 2 (pre-trained, random init)
times per encoder. Measured on the default screen with one torch thread on a shared 2-core machine: about
50 s per encoder at 10 steps, of which about 25 s are fine-tuning, so about 65 s per encoder at 15 steps and
just over 2 minutes for MAE and DINO. ``full``: the module's defaults."""
MASK_SWEEP_OVERRIDES = {
    "quick": {"train": {"steps": 4, "warmup_steps": 1, "checkpoint_every": 4}},
    "default": {"train": {"steps": 40, "warmup_steps": 4}},
    "full": {},
}
"""Changes to the MAE training configuration (:func:`training_config`) whose compute every ratio of the
mask-ratio sweep spends. ``default``: 40 steps of 128 crops at mask 0.75 (a sixth of notebook 3's run; 0.5
gets 24 steps, 0.9 gets 68). Measured with one torch thread on a shared 2-core machine: about 30 s of training per ratio
and 30 s to embed and score each ratio's profiles, about 3 minutes for the sweep. ``full``: notebook 3's run."""
MASK_SWEEP_TILES_PER_FIELD = {"quick": None, "default": 2, "full": None}
"""Tiles per field embedded to score each ratio of the sweep (``None``: all that pass the cell filter)."""


def mask_sweep_reference(profile: str) -> train.ExperimentConfig:
    """The MAE run whose training compute each ratio of the mask-ratio sweep spends (:data:`MASK_SWEEP_OVERRIDES`)."""
    return train.apply_overrides(training_config("mae", profile), MASK_SWEEP_OVERRIDES[check_profile(profile)],
                                 f"mask-ratio sweep, profile {profile}")


def mask_sweep_dir(build_dir: str | Path) -> Path:
    """Where a build's mask-ratio sweep keeps one MAE model per ratio."""
    return Path(build_dir) / "models" / "mask_sweep"


FULL_PLATES = (
    "BR00117010", "BR00117011", "BR00117012", "BR00117013",  # compound, 48 h
    "BR00116996", "BR00116997", "BR00116998", "BR00116999",  # CRISPR, 144 h
    "BR00118039", "BR00118040",  # ORF, 96 h
)  # fmt: skip
"""CPJUMP1 plates the ``full`` profile downloads: every analysed U2OS plate at its modality's longer time
point, the conditions the simulated default screen models (``cell_types=("U2OS",)``,
``timepoints=("long",)`` of :class:`cellstudy.simulate.SimulationConfig`), for all three modalities. The
barcodes are those of :func:`cellstudy.cpjump1.plate_conditions` with cell type U2OS and label ``long`` of
:func:`cellstudy.simulate.timepoint_labels` (checked by the tests)."""
FULL_FIELDS = (1, 2, 3, 4)
"""Fields (sites) per well the ``full`` profile downloads. Download size: the 10 plates have 3,816
non-empty wells, so 15,264 fields of 5 TIFFs; a 1080 x 1080 CPJUMP1 TIFF is about 2.2 MB, so about
34 MB per field, 17 GB per plate and 170 GB in all."""
FULL_WELLS = None
"""Well positions the ``full`` profile downloads per plate (``None``: every non-empty well of the plate
maps). Name a few, e.g. ``("A01", "D14")``, to try the full path on a download of a few GB."""


def gallery_dir(build_dir: str | Path) -> Path:
    """Where a build's Cell Painting Gallery downloads live (images in ``<barcode>/``, field table, profiles)."""
    return Path(build_dir) / "gallery"


def screen_fields(
    profile: str,
    build_dir: str | Path,
    metadata_folder: str | None = None,
    config: gallery.GalleryConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The field table of a profile's screen: simulated for ``quick`` and ``default``, downloaded for ``full``.

    ``quick``, ``default``: :meth:`~cellstudy.simulate.SimulationResult.field_table` of
    :func:`simulated_screen`. ``full``: the Gallery's fields :data:`FULL_FIELDS` of the wells
    (:data:`FULL_WELLS`) of :data:`FULL_PLATES` in :func:`gallery_dir`, as its field table lists them:
    downloaded first with :func:`cellstudy.gallery.download_screen` (resuming file by file) unless that
    table, written once every file is there, lists exactly this selection.

    Parameters
    ----------
    config
        Where the Gallery is; default :func:`cellstudy.gallery.config_from_env`.
    """
    if check_profile(profile) != "full":
        return simulated_screen(profile, build_dir, metadata_folder, progress).field_table()
    folder = gallery_dir(build_dir)
    saved = folder / gallery.FIELD_TABLE_FILE
    expected = gallery.screen_field_table(FULL_PLATES, folder, FULL_FIELDS, FULL_WELLS, metadata_folder)
    if not (saved.exists() and _same_fields(read_field_table(saved), expected)):
        gallery.download_screen(FULL_PLATES, folder, FULL_FIELDS, wells=FULL_WELLS, metadata_folder=metadata_folder,
                                config=config or gallery.config_from_env(), progress=progress)
    return read_field_table(saved)  # read back either way, so that the column types do not depend on the path


def _same_fields(table: pd.DataFrame, other: pd.DataFrame) -> bool:
    """Whether two field tables list the same fields in the same order."""
    keys = list(FIELD_KEY)
    if len(table) != len(other):
        return False
    return bool((table[keys].astype(str).to_numpy() == other[keys].astype(str).to_numpy()).all())


def classical_wells_path(profile: str, build_dir: str | Path) -> Path:
    """The classical well profiles of a profile's screen: cp-measure's of the simulated screen
    (:data:`CLASSICAL_WELLS` in :func:`simulation_dir`), or for ``full`` the published CellProfiler profiles of
    :data:`FULL_PLATES` (the same file name in :func:`gallery_dir`); written by the simulated-benchmark notebook."""
    folder = gallery_dir(build_dir) if check_profile(profile) == "full" else simulation_dir(build_dir)
    return folder / CLASSICAL_WELLS


def profile_methods(profile: str) -> list[str]:
    """The profiling methods (:data:`PROFILE_METHODS`) a profile compares: all but the oracle for ``full``
    (real screens have no planted phenotype)."""
    return [method for method in PROFILE_METHODS if not (check_profile(profile) == "full" and method == "oracle")]


TRAINING_FIELDS = "training_fields.csv"
"""Field table of a ``full`` pre-training run, written to its model folder for the ``torchrun`` processes."""


def pretrain(config: train.ExperimentConfig, training_table: pd.DataFrame, model_dir: str | Path, profile: str) -> int:
    """Pre-train ``config`` on the fields of ``training_table`` into ``model_dir``; returns the steps done.

    ``quick`` and ``default`` hold the simulated fields in memory. ``full`` reads its fields from disk as crops
    need them (:class:`cellstudy.fieldstore.FieldStore`) and, with several GPUs, trains as one ``torchrun``
    process per GPU (:func:`cellstudy.cli.torchrun_train`) on the table written to ``model_dir`` as
    :data:`TRAINING_FIELDS`. A checkpoint of the same configuration in ``model_dir`` is resumed (:func:`resumable`).
    """
    resume = resumable(model_dir, config)
    if check_profile(profile) != "full":
        fields, names = embed.read_fields(training_table)
        return train.train(config, fields, model_dir, names=names, resume=resume).step
    if torch.cuda.device_count() > 1:
        table = write_field_table(training_table, Path(model_dir) / TRAINING_FIELDS)
        cli.torchrun_train(config, table, model_dir, torch.cuda.device_count(), resume=resume)
        return train.load_encoder(Path(model_dir) / train.ENCODER).step
    store = FieldStore(training_table)
    return train.train(config, store, model_dir, names=store.names, resume=resume).step
