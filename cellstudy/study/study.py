"""The study object a notebook makes once from its papermill parameters and then calls.

:class:`Study` holds a run size (:mod:`cellstudy.study.runsize`), the build folder and the data root, and
answers everything a notebook asks of them: where each input and result lives, the settings of each
step at this size, the label of the data (simulated or CPJUMP1), and an atomic save of every table and
figure. In a notebook::

    study = Study.create(run_size, build_dir, data_dir, notebook="06_evaluation")
    study.save_table(summary, "summary")          # build/results/06_evaluation/summary.csv
    study.save_figure(fig, "methods", summary)     # build/figures/06_evaluation_methods.png + .csv
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from cellstudy.applications.label_efficiency import LabelEfficiencyConfig
from cellstudy.columns import ANOMALY, PLATE
from cellstudy.data import cpjump1, decodedstore, gallery, real_wells
from cellstudy.data.fieldstore import FieldStore, read_field_table, write_field_table
from cellstudy.data.sources import data_root, fetch, metadata_folder
from cellstudy.evaluation import significance
from cellstudy.evaluation.retrieval import MapSettings
from cellstudy.files import atomic_path
from cellstudy.profiling import embed
from cellstudy.simulation import simulate
from cellstudy.study import plots
from cellstudy.study.runsize import RunSize, run_size
from cellstudy.training import distributed, train

PROFILING_METHODS = {
    "dino": "DINO",
    "mae": "MAE",
    "random_vit": "random ViT",
    "pixel_stats": "pixel statistics",
    "classical": "classical",
    "oracle": "oracle",
}
"""The profiling methods compared, each with its label in figures and text: the embedding notebook writes
one well-profile table per method, the evaluation notebook scores them."""
QUERY_METHODS = ("dino", "mae", "classical", "oracle")
"""Profiles the applications notebook queries (the learned ones, the classical baseline, the planted oracle)."""
CLASSICAL_WELLS = "classical_wells.csv"
"""File name of the classical well profiles: cp-measure's of the simulated screen, or the published
CellProfiler profiles of the downloaded plates."""
DECODED_FOLDER = "decoded"
"""Folder of a screen's decoded field store, beside its images."""
TRAINING_FIELDS = "training_fields.csv"
"""Field table of a pre-training run from disk, written to its model folder for the ``torchrun`` processes."""


@dataclass(frozen=True)
class Study:
    """One run of the study: its size, its build folder, its data, and the notebook asking.

    Parameters
    ----------
    size
        The run size.
    build_dir
        Where every step writes (simulated screen, downloads, models, profiles, results, figures).
    data_root
        The study's real data (:func:`cellstudy.data.sources.data_root`).
    notebook
        Name of the notebook using it (``06_evaluation``): the folder of its results and the prefix of its figures.
    """

    size: RunSize
    build_dir: Path
    data_root: Path
    notebook: str = "study"

    @classmethod
    def create(
        cls,
        size: str | RunSize,
        build_dir: str | Path = "../build",
        data_dir: str | Path | None = None,
        notebook: str = "study",
    ) -> Study:
        """The study of a notebook's papermill parameters (``size`` a run size name or a :class:`RunSize`)."""
        return cls(run_size(size), Path(build_dir), data_root(data_dir), notebook)

    # --- the data -------------------------------------------------------------------------------------
    @property
    def real_screen(self) -> bool:
        """Whether the study's screen is the real CPJUMP1 plates (downloaded) rather than the simulation."""
        return self.size.gallery is not None

    @property
    def data_label(self) -> str:
        """``CPJUMP1`` or ``simulated``: how every figure and table names the data it shows."""
        return "CPJUMP1" if self.real_screen else "simulated"

    @property
    def screen_label(self) -> str:
        """``CPJUMP1 screen`` or ``simulated screen``."""
        return f"{self.data_label} screen"

    def real_wells(self, model_type: str) -> pd.DataFrame:
        """The real CPJUMP1 wells of ``model_type`` (``final`` or ``shuffled``) from the data root, on the analysed
        design (:func:`cellstudy.data.real_wells.load_real_wells`); never downloaded here.

        Raises
        ------
        FileNotFoundError
            The data root does not hold the real-wells table.
        """
        fetch(real_wells.REAL_WELLS_FILE, self.data_root, download=False)  # absent: say so before reading the design
        return real_wells.load_real_wells(model_type, self.data_root, self.metadata_dir, download=False)

    @cached_property
    def metadata_dir(self) -> Path:
        """The CPJUMP1 design tables (downloaded from the manifest's URLs where missing)."""
        return metadata_folder(self.data_root)

    # --- folders --------------------------------------------------------------------------------------
    @property
    def figures_dir(self) -> Path:
        """Every figure, named after its notebook, with its source data as CSV beside it."""
        return self.build_dir / "figures"

    @property
    def results_dir(self) -> Path:
        """The result tables of the notebook asking."""
        return self.build_dir / "results" / self.notebook

    @property
    def simulation_dir(self) -> Path:
        """The simulated screen (written by the simulated-benchmark notebook)."""
        return self.build_dir / "simulated"

    @property
    def gallery_dir(self) -> Path:
        """The Cell Painting Gallery downloads (images in ``<barcode>/``, field table, profiles)."""
        return self.build_dir / "gallery"

    @property
    def decoded_dir(self) -> Path:
        """The decoded field store of the study's screen (:mod:`cellstudy.data.decodedstore`), beside its images."""
        return (self.gallery_dir if self.real_screen else self.simulation_dir) / DECODED_FOLDER

    @property
    def profiles_dir(self) -> Path:
        """The well-profile tables (written by the embedding notebook)."""
        return self.build_dir / "profiles"

    @property
    def mask_sweep_dir(self) -> Path:
        """One MAE model per ratio of the mask-ratio sweep."""
        return self.build_dir / "models" / "mask_sweep"

    def model_dir(self, method: str, real_fields: bool = False) -> Path:
        """A pre-trained model: ``models/<method>`` (``models/<method>_real`` for the ten real fields)."""
        return self.build_dir / "models" / (f"{method}_real" if real_fields else method)

    def well_profiles_path(self, method: str, processed: bool = False) -> Path:
        """``<method>_wells.csv`` as the method makes them; ``<method>_wells_processed.csv`` post-processed."""
        if method not in PROFILING_METHODS:
            raise ValueError(f"unknown profiling method {method!r}; choose one of {list(PROFILING_METHODS)}")
        return self.profiles_dir / (f"{method}_wells_processed.csv" if processed else f"{method}_wells.csv")

    def consensus_profiles_path(self, method: str) -> Path:
        """The consensus profiles (one row per perturbation, post-processed), for ``cellstudy query``."""
        return self.well_profiles_path(method).with_name(f"{method}_consensus.csv")

    def classical_wells_path(self, simulated: bool | None = None) -> Path:
        """The classical well profiles: cp-measure's beside the simulated screen, or the published CellProfiler
        profiles of the downloaded plates.

        ``simulated``: those of the simulated screen (``True``, as the simulated benchmark writes at every size) or
        of the Gallery's plates (``False``); ``None``: of the study's screen.
        """
        simulated = not self.real_screen if simulated is None else simulated
        return (self.simulation_dir if simulated else self.gallery_dir) / CLASSICAL_WELLS

    # --- saving and reading ---------------------------------------------------------------------------
    def save_table(self, table: pd.DataFrame, name: str, index: bool = False) -> Path:
        """Write ``table`` to ``<results_dir>/<name>.csv`` atomically; returns the path."""
        path = self.results_dir / f"{name}.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=index)
        return path

    def save_csv(self, table: pd.DataFrame, path: Path, index: bool = False) -> Path:
        """Write ``table`` to ``path`` (an input of a later step, e.g. well profiles) atomically."""
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=index)
        return path

    def save_figure(self, fig: plt.Figure, name: str, data: pd.DataFrame | None) -> Path:
        """Save ``fig`` as ``<notebook>_<name>.png`` in :attr:`figures_dir` with its source data beside it."""
        return plots.save_figure(fig, f"{self.notebook}_{name}", data, self.figures_dir)

    def read_result(self, notebook: str, name: str) -> pd.DataFrame:
        """``results/<notebook>/<name>.csv``, or an error naming the notebook that writes it."""
        path = self.build_dir / "results" / notebook / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: run notebook {notebook} first (make reproduce runs them in order)"
            )
        return pd.read_csv(path)

    # --- the screen -----------------------------------------------------------------------------------
    def simulation_config(self) -> simulate.SimulationConfig:
        """The simulated screen of this size, reading the CPJUMP1 design from :attr:`metadata_dir`."""
        return replace(self.size.simulation, metadata_folder=str(self.metadata_dir))

    def simulated_screen(self, progress: bool = True) -> simulate.SimulationResult:
        """The simulated screen in :attr:`simulation_dir`.

        Loaded if a complete screen of this configuration is there (where the CPJUMP1 metadata were read
        from does not count), otherwise simulated, replacing a screen of another configuration (its images
        are deleted first).
        """
        config, folder = self.simulation_config(), self.simulation_dir
        summary = folder / simulate.SUMMARY_FILE
        if summary.exists() and _without_source(json.loads(summary.read_text())["config"]) == _without_source(
            config.to_dict()
        ):
            return simulate.SimulationResult.load(folder)
        summary.unlink(missing_ok=True)  # the old screen is incomplete from here on
        shutil.rmtree(folder / simulate.IMAGE_FOLDER, ignore_errors=True)
        return simulate.simulate(config, folder, progress=progress)

    def gallery_plates(self) -> list[str]:
        """The plates of the size's Gallery selection, without the anomalous ones when it excludes them.

        Raises
        ------
        ValueError
            The size has no Gallery selection, or it excludes every one of its plates.
        """
        selection = self.size.gallery
        if selection is None:
            raise ValueError(f"run size {self.size.name} reads no plates from the Cell Painting Gallery")
        if not selection.exclude_anomalous:
            return list(selection.plates)
        anomalies = cpjump1.plate_anomalies(self.metadata_dir, selection.plates)
        plates = anomalies.loc[anomalies[ANOMALY] == cpjump1.NO_ANOMALY, PLATE].tolist()
        if not plates:
            raise ValueError(f"every plate of run size {self.size.name} has a staining anomaly: none is left")
        return plates

    def screen_fields(self, config: gallery.GalleryConfig | None = None, progress: bool = True) -> pd.DataFrame:
        """The field table of the study's screen (the simulated one, or the Gallery's plates), each field decoded
        once into the store in :attr:`decoded_dir` (:func:`cellstudy.data.decodedstore.convert_fields`), which
        every later reader of the table reads in place of the TIFFs.

        The Gallery's fields (of :meth:`gallery_plates`) are downloaded first with
        :func:`cellstudy.data.gallery.download_screen` (resuming file by file) unless :attr:`gallery_dir`
        holds a finished download of exactly the size's selection
        (:func:`cellstudy.data.gallery.screen_is_downloaded`). The table lists only the fields with all
        five channels; the skipped ones are in the report beside it. ``config``: where the Gallery is
        (default :func:`cellstudy.data.gallery.config_from_env`).
        """
        if not self.real_screen:
            return self.simulated_fields(self.simulated_screen(progress), progress)
        table = self._gallery_fields(config, progress)
        return decodedstore.convert_fields(table, self.decoded_dir, self.size.store_workers, progress)

    def simulated_fields(self, screen: simulate.SimulationResult, progress: bool = True) -> pd.DataFrame:
        """The field table of the simulated ``screen``, each field decoded once into the store beside its images
        (at every size: the simulated benchmark reads it also when the study's screen is the Gallery's).
        """
        folder = self.simulation_dir / DECODED_FOLDER
        return decodedstore.convert_fields(screen.field_table(), folder, self.size.store_workers, progress)

    def _gallery_fields(self, config: gallery.GalleryConfig | None, progress: bool) -> pd.DataFrame:
        """The field table of the Gallery's plates as downloaded (TIFFs only)."""
        selection = self.size.gallery
        folder, metadata, plates = self.gallery_dir, str(self.metadata_dir), self.gallery_plates()
        expected = gallery.screen_field_table(plates, folder, selection.fields, selection.wells, metadata)
        if not gallery.screen_is_downloaded(folder, expected):
            gallery.download_screen(
                plates,
                folder,
                selection.fields,
                wells=selection.wells,
                metadata_folder=metadata,
                config=config or gallery.config_from_env(),
                progress=progress,
            )
        return read_field_table(
            folder / gallery.FIELD_TABLE_FILE
        )  # read back either way, so that the column types do not depend on the path

    def methods(self) -> list[str]:
        """The profiling methods (:data:`PROFILING_METHODS`) compared: all but the oracle without planted truth."""
        return [method for method in PROFILING_METHODS if self.size.planted_truth or method != "oracle"]

    # --- pre-training ---------------------------------------------------------------------------------
    def training_config(self, method: str, real_fields: bool = False) -> train.ExperimentConfig:
        """Pre-training configuration of ``method``: the size's preset and its changes to it.

        ``real_fields`` shortens the run to :attr:`~cellstudy.study.runsize.RunSize.real_field_steps` of the
        steps (and warm-up).
        """
        config = train.default_config(method, self.size.training_preset)
        config = train.apply_overrides(config, self.size.training_overrides(method), f"run size {self.size.name}")
        if not real_fields:
            return config
        steps = max(1, round(config.train.steps * self.size.real_field_steps))
        warmup = round(config.train.warmup_steps * self.size.real_field_steps)
        return train.apply_overrides(config, {"train": {"steps": steps, "warmup_steps": warmup}})

    def pretraining_fields(self, field_table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
        """The rows of a screen's field table pre-training reads (a seeded sample), in table order."""
        count = self.size.pretraining_fields
        if count is None or count >= len(field_table):
            return field_table
        return field_table.sample(count, random_state=seed).sort_index()

    def pretrain(self, config: train.ExperimentConfig, training_table: pd.DataFrame, model_dir: Path) -> int:
        """Pre-train ``config`` on the fields of ``training_table`` into ``model_dir``; returns the steps done.

        A simulated screen is held in memory. The Gallery's fields are read from disk (their decoded files, where
        the table names them) as crops need them
        (:class:`cellstudy.data.fieldstore.FieldStore`) and, with several GPUs (or
        :attr:`~cellstudy.study.runsize.RunSize.training_processes`), trained on by one ``torchrun`` process each
        on the table written to ``model_dir`` as :data:`TRAINING_FIELDS`. A checkpoint of the
        same configuration in ``model_dir`` is resumed (:func:`cellstudy.training.train.resumable`).
        """
        resume = train.resumable(model_dir, config)
        if not self.real_screen:
            fields, names = embed.read_fields(training_table)
            return train.train(config, fields, model_dir, names=names, resume=resume).step
        processes = self.size.training_processes or torch.cuda.device_count()
        if processes > 1:
            table = write_field_table(training_table, Path(model_dir) / TRAINING_FIELDS)
            distributed.torchrun_train(config, table, model_dir, processes, resume=resume)
            return train.load_encoder(Path(model_dir) / train.ENCODER).step
        store = FieldStore(training_table)
        return train.train(config, store, model_dir, names=store.names, resume=resume).step

    # --- embedding and scoring ------------------------------------------------------------------------
    @property
    def embedding_device(self) -> str:
        """``cuda`` where the size allows a GPU and there is one, else ``cpu``."""
        return "cuda" if self.size.embedding_device == "auto" and torch.cuda.is_available() else "cpu"

    def map_settings(self, seed: int = 0, method: str = significance.STUDY) -> MapSettings:
        """The retrieval tasks' settings at this size's null size: the study's significance test, or
        ``method="paper"`` wherever a number is set beside the CPJUMP1 paper's.
        """
        return MapSettings(null_size=self.size.map_null_size, seed=seed, method=method)

    def real_wells_settings(self) -> list[MapSettings]:
        """The retrieval tasks' settings on the real CPJUMP1 wells: the study's test with the size's
        ``real_wells_null_size`` draws (``map_null_size`` if unset), then the paper's with ``map_null_size``.
        """
        draws = self.size.real_wells_null_size or self.size.map_null_size
        return [replace(self.map_settings(), null_size=draws), self.map_settings(method=significance.PAPER)]

    def label_efficiency_config(self) -> LabelEfficiencyConfig:
        """The label-efficiency experiment at this size."""
        return train.apply_overrides(LabelEfficiencyConfig(), self.size.label_efficiency, f"run size {self.size.name}")

    def mask_sweep_reference(self) -> train.ExperimentConfig:
        """The MAE run whose training compute each ratio of the mask-ratio sweep spends."""
        return train.apply_overrides(
            self.training_config("mae"), self.size.mask_sweep, f"mask-ratio sweep, run size {self.size.name}"
        )


def _without_source(config: dict) -> dict:
    """A simulation config dict without ``metadata_folder``."""
    return {key: value for key, value in config.items() if key != "metadata_folder"}
