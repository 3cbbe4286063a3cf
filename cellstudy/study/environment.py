"""What a run of the study used: its software, read from the running environment (not from the lock file), and
the time each notebook took.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGES = (
    "cellstudy",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "statsmodels",
    "copairs",
    "pycytominer",
    "cp-measure",
    "tifffile",
    "imagecodecs",
    "boto3",
    "matplotlib",
    "seaborn",
    "umap-learn",
    "papermill",
    "jupyter-book",
)
"""The packages whose versions the book reports: the study's own and the libraries its numbers depend on."""


def versions(packages: tuple[str, ...] = PACKAGES) -> pd.DataFrame:
    """``package`` and installed ``version`` (``not installed`` where absent), Python's version first."""
    rows = [{"package": "python", "version": platform.python_version()}]
    for package in packages:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": package, "version": version})
    return pd.DataFrame(rows)


RUN_TIME_COLUMNS = ["notebook", "run_size", "minutes", "finished", "failed"]


def run_times(executed_dir: Path, skip: str = "") -> pd.DataFrame:
    """How long each executed notebook in ``executed_dir`` ran, from papermill's record in it (``skip``: a notebook
    left out, e.g. the one asking, whose copy there is from an earlier build).
    """
    rows = []
    for path in sorted(Path(executed_dir).glob("[0-9][0-9]_*.ipynb")):
        if path.stem == skip:
            continue
        papermill = json.loads(path.read_text())["metadata"].get("papermill", {})
        rows.append(
            {
                "notebook": path.stem,
                "run_size": papermill.get("parameters", {}).get("run_size"),
                "minutes": papermill.get("duration", np.nan) / 60,
                "finished": papermill.get("end_time"),
                "failed": bool(papermill.get("exception")),
            }
        )
    return pd.DataFrame(rows, columns=RUN_TIME_COLUMNS)
