"""Run sizes: every knob that makes the study small enough to smoke-test or large enough to publish.

Three sizes, each one frozen :class:`RunSize`, all defined here and nowhere else:

- ``quick``: a smoke run of every notebook in a few minutes (the notebook tests use it).
- ``default``: the study as the book shows it, sized for a 2-core laptop (about 25 minutes).
- ``full``: the real CPJUMP1 plates of the Cell Painting Gallery (:attr:`RunSize.gallery`), the GPU
  training preset, and the paper's null size.
- ``full-rehearsal``: the ``full`` path at ``quick`` size, against a local copy of the Gallery's layout
  (``make rehearse-full``): every step of a ``full`` run, on CPUs, in minutes.

A notebook takes the size's name as its papermill parameter ``run_size``; a variant for a test or an
experiment is ``dataclasses.replace(DEFAULT, map_null_size=1_000)``, passed in place of the name. Why
each default value is what it is: the book's "Decisions and measurements" page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from cellstudy.simulation.simulate import QUICK_CONFIG, SimulationConfig


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of nested option overrides, so that a frozen run size cannot be changed in place."""
    return MappingProxyType(
        {key: _frozen(value) if isinstance(value, Mapping) else value for key, value in mapping.items()}
    )


@dataclass(frozen=True)
class GallerySelection:
    """Which CPJUMP1 images the ``full`` size downloads from the Cell Painting Gallery.

    Parameters
    ----------
    plates
        Plate barcodes.
    fields
        Fields (sites) per well.
    wells
        Well positions per plate; ``None``: every non-empty well of the plate maps. Name a few, e.g.
        ``("A01", "D14")``, to try the full path on a download of a few GB.
    exclude_anomalous
        Leave out the plates with a staining anomaly in the CPJUMP1 experiment metadata
        (:func:`cellstudy.data.cpjump1.plate_anomalies`); ``False``: keep them, flagged in the field
        table's ``Metadata_anomaly``. Of :data:`FULL_PLATES` only the compound plates BR00117011 and
        BR00117012 have none (every CRISPR and ORF plate has one), so excluding them leaves no genetic
        plate and nothing for compound-gene matching.
    """

    plates: tuple[str, ...]
    fields: tuple[int, ...]
    wells: tuple[str, ...] | None = None
    exclude_anomalous: bool = False


FULL_PLATES = (
    "BR00117010", "BR00117011", "BR00117012", "BR00117013",  # compound, 48 h
    "BR00116996", "BR00116997", "BR00116998", "BR00116999",  # CRISPR, 144 h
    "BR00118039", "BR00118040",  # ORF, 96 h
)  # fmt: skip
"""Every analysed U2OS plate at its modality's longer time point: the conditions the simulated default
screen models (``cell_types=("U2OS",)``, ``timepoints=("long",)``), for all three modalities."""


@dataclass(frozen=True)
class RunSize:
    """Every size knob of one run of the study.

    Parameters
    ----------
    name
        ``quick``, ``default`` or ``full`` (a variant keeps its base's name unless given another).
    simulation
        The simulated screen notebook 2 renders and calibrates (``full`` renders the default one too).
    gallery
        The real plates that are the study's screen; ``None``: the simulated screen is.
    planted_truth
        Whether notebooks may use what the simulator planted (the oracle profile, true targets);
        ``False`` on a real screen, or to run the real screen's path on a simulated one.
    training_preset
        :data:`cellstudy.training.train.PRESETS` entry that pre-training starts from.
    mae, dino
        Changes to the preset per method (:func:`cellstudy.training.train.apply_overrides`).
    real_field_steps
        Share of the steps (and warm-up) for pre-training on the ten real fields.
    pretraining_fields
        Fields of the screen pre-training reads (a seeded sample; ``None``: all).
    store_workers
        Processes decoding the screen's fields into the decoded field store (the store does not depend on it).
    embedding_batch_size
        Tiles per encoder call when embedding (the profiles do not depend on it).
    embedding_device
        ``cpu``, or ``auto``: a GPU when there is one.
    training_processes
        ``torchrun`` processes pre-training the Gallery's screen; ``None``: one per GPU, and ``torchrun`` only
        when there are several. Set it to run the multi-process path on CPUs (gloo), as the rehearsal does.
    map_null_size
        Draws per permutation null of the retrieval tasks (the paper used 100,000).
    real_wells_null_size
        Draws per permutation null of the study's test on the real CPJUMP1 wells (``None``: ``map_null_size``);
        the paper's test there keeps ``map_null_size``.
    label_efficiency
        Changes to :class:`cellstudy.applications.label_efficiency.LabelEfficiencyConfig`.
    mask_sweep
        Changes to the MAE configuration whose compute every ratio of the mask-ratio sweep spends.
    mask_sweep_tiles_per_field
        Tiles per field embedded to score each ratio of the sweep (``None``: all that pass the cell filter).
    pixel_sample
        Pixels per channel sampled for the intensity histograms of notebook 1.
    control_fields
        Negative-control fields per source measured for the realism check of notebook 2.
    """

    name: str
    simulation: SimulationConfig
    gallery: GallerySelection | None
    planted_truth: bool
    training_preset: str
    mae: Mapping[str, Any]
    dino: Mapping[str, Any]
    map_null_size: int
    label_efficiency: Mapping[str, Any]
    mask_sweep: Mapping[str, Any]
    mask_sweep_tiles_per_field: int | None
    pretraining_fields: int | None
    embedding_device: str = "cpu"
    training_processes: int | None = None
    real_wells_null_size: int | None = None
    real_field_steps: float = 0.2
    store_workers: int = 2
    embedding_batch_size: int = 256
    pixel_sample: int = 50_000
    control_fields: int = 12

    def __post_init__(self) -> None:
        for name in ("mae", "dino", "label_efficiency", "mask_sweep"):  # read-only, as the rest of the size
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def training_overrides(self, method: str) -> Mapping[str, Any]:
        """The changes this size makes to the training preset of ``method`` (``mae`` or ``dino``)."""
        if method not in ("mae", "dino"):
            raise ValueError(f"method must be 'mae' or 'dino', got {method!r}")
        return getattr(self, method)


NO_INTENSITY_JITTER = {"intensity_jitter": 0.0, "gamma_jitter": 0.0}
"""Crop settings that keep flips and crops but drop the per-channel intensity and gamma jitter."""

QUICK = RunSize(
    name="quick",
    simulation=QUICK_CONFIG,
    gallery=None,
    planted_truth=True,
    training_preset="cpu",
    mae={"train": {"steps": 8, "warmup_steps": 2, "batch_size": 16, "checkpoint_every": 8}},
    dino={"train": {"steps": 4, "warmup_steps": 1, "batch_size": 8, "checkpoint_every": 4}},
    pretraining_fields=None,
    map_null_size=10_000,
    real_wells_null_size=2_000,
    label_efficiency={"seeds": (0,), "tiles_per_field": 1, "fine_tuning": {"steps": 2, "batch_size": 8}},
    mask_sweep={"train": {"steps": 4, "warmup_steps": 1, "checkpoint_every": 4}},
    mask_sweep_tiles_per_field=None,
    pixel_sample=5_000,
    control_fields=4,
)
"""Seconds per notebook: a few training steps, one seed, a small null."""

DEFAULT = RunSize(
    name="default",
    simulation=SimulationConfig(),
    gallery=None,
    planted_truth=True,
    training_preset="cpu",
    mae={"train": {"steps": 250, "warmup_steps": 20}},
    dino={"train": {"steps": 200, "warmup_steps": 20, "batch_size": 24}, "crops": NO_INTENSITY_JITTER},
    pretraining_fields=320,
    map_null_size=100_000,
    real_wells_null_size=20_000,
    label_efficiency={"seeds": (0, 1), "tiles_per_field": 2, "fine_tuning": {"steps": 15, "batch_size": 16}},
    mask_sweep={"train": {"steps": 40, "warmup_steps": 4}},
    mask_sweep_tiles_per_field=2,
)
"""The CPU preset cut to about 2 minutes of training per model, so that each notebook fits 5 minutes."""

FULL = RunSize(
    name="full",
    simulation=SimulationConfig(),
    gallery=GallerySelection(plates=FULL_PLATES, fields=(1, 2, 3, 4)),
    planted_truth=False,
    training_preset="gpu-vit-s16-224",
    mae={},
    dino={},
    pretraining_fields=None,
    map_null_size=100_000,
    label_efficiency={},
    mask_sweep={},
    mask_sweep_tiles_per_field=None,
    embedding_device="auto",
    store_workers=8,
)
"""The real CPJUMP1 plates on GPUs: the GPU preset and every module default unchanged."""

FULL_REHEARSAL = RunSize(
    name="full-rehearsal",
    simulation=replace(QUICK_CONFIG, n_replicate_plates=None, fields_per_well=2),
    gallery=GallerySelection(plates=FULL_PLATES, fields=(1, 2)),
    planted_truth=False,
    training_preset=QUICK.training_preset,
    mae=QUICK.mae,
    dino=QUICK.dino,
    pretraining_fields=QUICK.pretraining_fields,
    map_null_size=QUICK.map_null_size,
    label_efficiency=QUICK.label_efficiency,
    mask_sweep=QUICK.mask_sweep,
    mask_sweep_tiles_per_field=QUICK.mask_sweep_tiles_per_field,
    embedding_device=FULL.embedding_device,
    training_processes=2,
    real_wells_null_size=QUICK.real_wells_null_size,
    pixel_sample=QUICK.pixel_sample,
    control_fields=QUICK.control_fields,
)
"""The ``full`` path (the Gallery's plates, their published profiles, no planted truth, ``torchrun``) at ``quick``
size on 2 CPU processes. Its simulation is also the screen the rehearsal's local Gallery serves as the ten
plates of :data:`FULL_PLATES` (every replicate plate, fields 1 and 2)."""

RUN_SIZES = {size.name: size for size in (QUICK, DEFAULT, FULL, FULL_REHEARSAL)}
"""The run sizes by name."""


def run_size(size: str | RunSize) -> RunSize:
    """The run size named ``size`` (a :class:`RunSize` is returned as it is); a ``ValueError`` lists the names."""
    if isinstance(size, RunSize):
        return size
    if size not in RUN_SIZES:
        raise ValueError(f"unknown run size {size!r}; choose one of {tuple(RUN_SIZES)}")
    return RUN_SIZES[size]
