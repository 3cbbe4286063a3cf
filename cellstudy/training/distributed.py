"""Pre-training on several GPUs: one ``torchrun`` process per GPU running ``cellstudy train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cellstudy.training.train import ExperimentConfig, atomic_write_text

REQUESTED_CONFIG = "requested_config.json"
"""File in the output folder that :func:`torchrun_train` passes to ``cellstudy train --config``."""


def torchrun_command(
    method: str,
    fields_table: str | os.PathLike,
    out_dir: str | os.PathLike,
    config_file: str | os.PathLike,
    n_processes: int,
    resume: bool = True,
) -> list[str]:
    """The command that runs ``cellstudy train`` on a field table in ``n_processes`` processes with ``torchrun``."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}",
        "-m", "cellstudy.cli", "train", method, "--fields-table", str(fields_table), "--out", str(out_dir),
        "--config", str(config_file), *([] if resume else ["--no-resume"]),
    ]  # fmt: skip


def torchrun_train(
    config: ExperimentConfig,
    fields_table: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_processes: int,
    resume: bool = True,
) -> None:
    """Pre-train ``config`` on a field table in ``n_processes`` GPU processes: :func:`torchrun_command` as a subprocess.

    The configuration is written to ``<out_dir>/requested_config.json`` (:data:`REQUESTED_CONFIG`) for the
    command; the model lands in ``out_dir`` as with :func:`cellstudy.training.train.train`.

    Raises
    ------
    subprocess.CalledProcessError
        The training processes failed (their output went to this process's output).
    """
    config_file = Path(out_dir) / REQUESTED_CONFIG
    config_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", config_file)
    subprocess.run(torchrun_command(config.method, fields_table, out_dir, config_file, n_processes, resume), check=True)
