"""One training loop for MAE and DINO pre-training.

:func:`train` runs either method on fields held in memory or read from disk as crops need them
(a :class:`~cellstudy.data.fieldstore.FieldStore`, of a decoded store for speed):

- **Reproducible.** Sample ``i`` of the crop stream depends only on
  ``(seed, i)`` (:class:`~cellstudy.training.crops.CropDataset`); step ``s`` uses samples
  ``s * batch_size ... (s + 1) * batch_size - 1``, split evenly over processes
  (:class:`StepBatchSampler`, the rank-aware replacement of a
  ``DistributedSampler`` for an endless stream). Learning rate and weight decay
  are closed-form functions of the step. Same seed, same numbers (bitwise on CPU).
- **Resumable exactly.** ``out/checkpoint.pt`` holds the model (with DINO's
  teacher and centre), optimizer, step (which is also the scheduler and sampler
  position) and every process's python/numpy/torch random states. It is written
  atomically (temp file + ``os.replace``) and read with
  ``torch.load(weights_only=True)``. A run stopped after any checkpoint and
  restarted ends with the same weights and loss log as an uninterrupted one.
- **Observable.** ``out/metrics.jsonl`` gets one JSON line per step (loss,
  learning rate, weight decay, gradient norm, method diagnostics such as DINO's
  collapse measures, images/s); a tqdm bar shows progress.
- **Scalable.** bf16 autocast on CUDA; several GPUs with ``torchrun`` (DDP:
  gradients averaged over processes, DINO's centre all-reduced). The device is
  detected unless configured.

``out/encoder.pt`` holds the pre-trained encoder alone (MAE: the encoder; DINO:
the teacher's encoder) with its config and the channel statistics;
:func:`load_encoder` reads it for the embedding stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cellstudy.files import atomic_path
from cellstudy.models.dino import DINO, DINOConfig, collapse_warnings
from cellstudy.models.mae import MAE, MAEConfig
from cellstudy.models.vit import EncoderConfig, ViTEncoder, build_encoder
from cellstudy.training.crops import (
    ChannelStats,
    CropConfig,
    CropDataset,
    compute_channel_stats,
    crop_loader,
)

METHODS = ("mae", "dino")
"""Pre-training methods :func:`train` knows."""
PRESETS = ("cpu", "gpu-vit-s16-224")
"""Named default configurations (:func:`default_config`)."""
NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "channel_embed", "mask_token")
"""Parameters (by name suffix) exempt from weight decay, besides biases and norm weights."""
RUN_ENVIRONMENT = ("device", "num_workers", "checkpoint_every")
"""Training options a resumed run may change: where and how fast it runs, not what it computes."""
CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
METRICS = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Optimisation and run settings shared by MAE and DINO.

    Attributes
    ----------
    steps
        Total optimizer steps; the schedules are laid out over them.
    batch_size
        Global batch (samples per step over all processes); must divide by the
        number of processes. Larger batches need a larger ``base_lr`` only
        through the linear scaling rule, which is applied automatically.
    base_lr
        Learning rate per 256 samples: the peak rate is ``base_lr * batch_size / 256``
        (MAE 1.5e-4, DINO 5e-4 in the papers, for runs of hundreds of epochs;
        short CPU runs use more).
    min_lr
        Learning rate at the end of the cosine decay.
    warmup_steps
        Linear learning-rate warm-up from 0 (MAE and DINO: about 5-10 % of training).
    weight_decay, weight_decay_end
        AdamW weight decay at the first and last step, cosine in between (MAE: 0.05
        constant; DINO: 0.04 -> 0.4, which slows the teacher's drift late in training).
    beta1, beta2
        AdamW betas (MAE: 0.9, 0.95; DINO: 0.9, 0.999).
    clip_grad
        Clip the global gradient norm at this value; 0 disables (DINO: 3.0).
    seed
        Seeds model initialisation, crops, augmentations and masks.
    device
        ``"auto"`` (CUDA if available, one GPU per process, else CPU), ``"cpu"`` or ``"cuda"``.
    amp
        bf16 autocast on CUDA (ignored on CPU, where runs stay float32 and bitwise reproducible).
    num_workers
        Loader worker processes (:func:`cellstudy.training.crops.crop_loader`; the batches do not depend on
        it). 0 on 2-core CPUs (workers would steal the model's cores); 6-10 per GPU.
    checkpoint_every
        Write ``checkpoint.pt`` and ``encoder.pt`` every this many steps (and at the end).
    """

    steps: int = 1000
    batch_size: int = 64
    base_lr: float = 1.5e-3
    min_lr: float = 1.0e-6
    warmup_steps: int = 50
    weight_decay: float = 0.05
    weight_decay_end: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    clip_grad: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    checkpoint_every: int = 100


@dataclass
class ExperimentConfig:
    """Everything a pre-training run depends on; stored in its checkpoints.

    ``mae`` is used when ``method == "mae"``, ``dino`` when ``method == "dino"``.
    """

    method: str = "mae"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    dino: DINOConfig = field(default_factory=DINOConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        views = (self.crops.n_global, self.crops.n_local)
        if self.method == "mae" and views != (1, 0):
            raise ValueError(f"MAE trains on one crop per sample: set crops.n_global=1, n_local=0 (got {views})")
        if self.method == "dino" and (self.crops.n_global < 1 or sum(views) < 2):
            raise ValueError(f"DINO needs a global crop and at least two views per sample (got {views})")

    def to_dict(self) -> dict:
        """Nested plain-python form (JSON and checkpoint friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "config") -> ExperimentConfig:
        """The CPU preset of ``values["method"]`` updated by a (possibly partial) nested dict."""
        return apply_overrides(default_config(values.get("method", "mae")), values, where)


def apply_overrides(config: Any, overrides: Mapping, where: str = "config") -> Any:
    """Copy of dataclass ``config`` with ``overrides`` (nested dicts for nested dataclasses) applied.

    Raises ``ValueError`` naming ``where`` and the key for keys the config does not have.
    """
    changes = {}
    names = {f.name for f in dataclasses.fields(config)}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"{where}: unknown option {key!r}; known: {sorted(names)}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}.{key}: expected a section of options, got {value!r}")
            changes[key] = apply_overrides(current, value, f"{where}.{key}")
        elif not _compatible(value, current):
            raise ValueError(f"{where}.{key}: expected {type(current).__name__}, got {value!r}")
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)


def _compatible(value: Any, current: Any) -> bool:
    """Whether ``value`` may replace option value ``current`` (same type; int for float; None either way)."""
    if value is None or current is None:
        return True
    if isinstance(current, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is type(current)


PRESET_OVERRIDES = {
    ("cpu", "mae"): {"mae": {"decoder_depth": 1}, "train": {"batch_size": 128}},
    ("cpu", "dino"): {
        "crops": {"n_global": 2, "n_local": 4, "local_size": 32, "region_size": 64},
        "train": {
            "steps": 300,
            "warmup_steps": 30,
            "batch_size": 32,
            "base_lr": 8.0e-3,
            "weight_decay": 0.04,
            "weight_decay_end": 0.4,
            "beta2": 0.999,
            "clip_grad": 3.0,
        },
        "dino": {"teacher_momentum": 0.99},
    },
    ("gpu-vit-s16-224", "mae"): {
        "encoder": {"size": "small", "depth": 12, "patch_size": 16, "img_size": 224, "drop_path_rate": 0.1},
        "crops": {"global_size": 224, "region_size": 224},
        "train": {
            "steps": 50_000,
            "batch_size": 256,
            "base_lr": 1.5e-4,
            "warmup_steps": 2_500,
            "num_workers": 8,
            "checkpoint_every": 1_000,
        },
        "mae": {"decoder_dim": 256, "decoder_depth": 4, "decoder_heads": 8},
    },
    ("gpu-vit-s16-224", "dino"): {
        "encoder": {"size": "small", "depth": 12, "patch_size": 16, "img_size": 224, "drop_path_rate": 0.1},
        "crops": {"n_global": 2, "global_size": 224, "n_local": 6, "local_size": 96, "region_size": 320},
        "train": {
            "steps": 50_000,
            "batch_size": 128,
            "base_lr": 5.0e-4,
            "warmup_steps": 2_500,
            "weight_decay": 0.04,
            "weight_decay_end": 0.4,
            "beta2": 0.999,
            "clip_grad": 3.0,
            "num_workers": 8,
            "checkpoint_every": 1_000,
        },
        "dino": {
            "out_dim": 65536,
            "head_hidden_dim": 2048,
            "head_bottleneck_dim": 256,
            "freeze_last_layer_steps": 1_000,
        },
    },
}
"""Changes to the dataclass defaults per (preset, method).

``cpu``: ViT-tiny width, 6 blocks, 8-px patches, 64-px crops (DINO: the two global crops are the whole
64-px region, flipped or turned, plus four 32-px local crops); a few minutes on 2 CPU cores. Learning
rates are higher and the teacher momentum lower than published, for runs of hundreds of steps; MAE
uses a one-block decoder and batches of 128 so that its masked step stays cheap on a CPU. How these
were chosen, with the measurements: the book's "Decisions and measurements" page.
``gpu-vit-s16-224``: ViT-S/16 on 224-px crops (DINO: 96-px local crops), the published architectures
and hyper-parameters (MAE decoder narrowed to 256-d x 4), for one or more GPUs.
"""


def default_config(method: str = "mae", preset: str = "cpu") -> ExperimentConfig:
    """The configuration of ``method`` under the training ``preset`` (see :data:`PRESET_OVERRIDES`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown training preset {preset!r}; choose one of {PRESETS}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    overrides = {"method": method, **PRESET_OVERRIDES[preset, method]}
    return apply_overrides(ExperimentConfig(), overrides, f"preset {preset}")


def load_config(path: str | os.PathLike | None, method: str, preset: str = "cpu") -> ExperimentConfig:
    """The ``preset`` of ``method``, overridden by the JSON file at ``path`` (if any)."""
    config = default_config(method, preset)
    if path is None:
        return config
    with open(path) as handle:
        overrides = json.load(handle)
    if overrides.get("method", method) != method:
        raise ValueError(f"{path}: config is for method {overrides['method']!r}, but {method!r} was asked for")
    return apply_overrides(config, overrides, where=str(path))


def cosine_schedule(
    step: int, total_steps: int, start: float, end: float, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup_steps``, then a cosine to ``end``.

    For ``step >= warmup_steps`` the value is ``end + (start - end) * (1 + cos(pi * t)) / 2``
    with ``t = (step - warmup_steps) / (total_steps - warmup_steps)``.
    """
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return end + (start - end) * (1.0 + math.cos(math.pi * t)) / 2.0


class StepBatchSampler(torch.utils.data.Sampler):
    """Sample indices of this process's share of each step's global batch.

    Step ``s`` uses samples ``s * batch_size + rank * b + j`` for ``j < b = batch_size / world_size``.
    """

    def __init__(self, start_step: int, end_step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not divide over {world_size} processes")
        self.start_step, self.end_step = start_step, end_step
        self.batch_size, self.local_batch = batch_size, batch_size // world_size
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.end_step):
            first = step * self.batch_size + self.rank * self.local_batch
            yield list(range(first, first + self.local_batch))

    def __len__(self) -> int:
        return self.end_step - self.start_step


def build_model(config: ExperimentConfig) -> MAE | DINO:
    """The pre-training model (encoder plus MAE decoder, or DINO student/teacher) for ``config``."""
    encoder = build_encoder(config.encoder)
    if config.method == "mae":
        return MAE(encoder, config.mae, config.crops.global_size)
    return DINO(encoder, config.dino, config.crops.n_global)


def parameter_groups(model: nn.Module) -> list[dict]:
    """Trainable parameters split into a weight-decayed group and one without decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            exempt = param.ndim <= 1 or name.endswith(NO_WEIGHT_DECAY)
            (no_decay if exempt else decay).append(param)
    return [{"params": decay, "apply_decay": True}, {"params": no_decay, "apply_decay": False}]


def diagnose(config: ExperimentConfig, metrics: Mapping[str, float]) -> list[str]:
    """Warnings about a step's metrics (DINO: collapse modes; MAE: none)."""
    return collapse_warnings(metrics, config.dino) if config.method == "dino" else []


class Distributed(NamedTuple):
    """Where this process stands in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int
    world_size: int
    local_rank: int


def distributed_from_env() -> Distributed:
    """Rank, world size and local rank from ``torchrun``'s environment variables."""
    return Distributed(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``"auto"`` -> this process's GPU if CUDA is available, else CPU; otherwise ``name``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


@contextmanager
def process_group(ctx: Distributed, device: torch.device) -> Iterator[None]:
    """Initialise (and afterwards destroy) the process group of a multi-process job, if not done already."""
    owned = ctx.world_size > 1 and not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if owned:
            dist.destroy_process_group()


def random_states() -> dict:
    """Python, numpy and torch (CPU and CUDA) random states as plain containers and tensors."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            **numpy_state,
            "state": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": numpy_state["state"]["pos"],
            },
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: Mapping) -> None:
    """Restore states saved by :func:`random_states`."""
    random.setstate(states["python"])
    numpy_state = dict(states["numpy"])
    numpy_state["state"] = {
        "key": states["numpy"]["state"]["key"].numpy().astype(np.uint32),
        "pos": states["numpy"]["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gather_random_states(ctx: Distributed) -> list[dict]:
    """Every process's random states, indexed by rank."""
    if ctx.world_size == 1:
        return [random_states()]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, random_states())
    return states


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    with atomic_path(path) as temp_path:
        torch.save(obj, temp_path)


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temp_path:
        temp_path.write_text(text)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` log (a torn last line, from a killed run, is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: Path, before_step: int) -> None:
    """Keep only the log records of steps before ``before_step`` (those a resumed run will not redo)."""
    kept = [record for record in read_metrics(path) if record["step"] < before_step]
    atomic_write_text("".join(json.dumps(record) + "\n" for record in kept), path)


def reduce_metrics(metrics: Mapping[str, torch.Tensor], ctx: Distributed) -> dict[str, float]:
    """Scalar metrics averaged over processes, as floats."""
    values = torch.stack([value.detach().float().reshape(()) for value in metrics.values()])
    if ctx.world_size > 1:
        dist.all_reduce(values)
        values /= ctx.world_size
    return dict(zip(metrics, values.tolist()))


def move_to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``; the per-sample seeds stay on the CPU."""
    return {"views": [view.to(device, non_blocking=True) for view in batch["views"]], "seed": batch["seed"]}


def resume_signature(config: Mapping) -> dict:
    """The parts of a config dict that must match for a run to resume: all but where and how fast it runs."""
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in RUN_ENVIRONMENT}}


def save_checkpoint(
    out_dir: Path,
    step: int,
    config: ExperimentConfig,
    model: MAE | DINO,
    optimizer: torch.optim.Optimizer,
    stats: ChannelStats,
    rng: list[dict],
) -> None:
    """Write ``checkpoint.pt`` (everything to resume at ``step``) and ``encoder.pt``."""
    atomic_save(
        {
            "step": step,
            "config": config.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "channel_stats": stats.to_dict(),
            "rng": rng,
            "samples_seen": step * config.train.batch_size,
        },
        out_dir / CHECKPOINT,
    )
    atomic_save(
        {
            "method": config.method,
            "step": step,
            "encoder_config": dataclasses.asdict(config.encoder),
            "crop_config": dataclasses.asdict(config.crops),
            "channel_stats": stats.to_dict(),
            "encoder": model.export_encoder().state_dict(),
        },
        out_dir / ENCODER,
    )


class PretrainedEncoder(NamedTuple):
    """An encoder read by :func:`load_encoder`, with what is needed to feed it."""

    encoder: ViTEncoder
    stats: ChannelStats
    crops: CropConfig
    method: str
    step: int


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> PretrainedEncoder:
    """Read an ``encoder.pt`` written by :func:`train` (eval mode, on ``device``)."""
    state = torch.load(path, map_location=device, weights_only=True)
    encoder = build_encoder(EncoderConfig(**state["encoder_config"]))
    encoder.load_state_dict(state["encoder"])
    return PretrainedEncoder(
        encoder.to(device).eval(),
        ChannelStats.from_dict(state["channel_stats"]),
        CropConfig(**state["crop_config"]),
        state["method"],
        state["step"],
    )


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (unwrapped) and the run's last numbers."""

    model: MAE | DINO
    step: int
    last_metrics: dict
    images_per_s: float
    out_dir: Path


def train(
    config: ExperimentConfig,
    fields: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Pre-train an encoder with ``config.method`` on crops of ``fields``.

    Parameters
    ----------
    config
        Full experiment configuration.
    fields
        ``(C, H, W)`` fields held in memory (:func:`cellstudy.training.crops.load_fields`), or a
        :class:`~cellstudy.data.fieldstore.FieldStore` that reads each from disk.
    out_dir
        Receives ``checkpoint.pt``, ``encoder.pt``, ``metrics.jsonl`` and ``config.json``.
    names
        Field names for error messages.
    resume
        Continue from ``out_dir/checkpoint.pt`` if it exists (else start afresh,
        overwriting the log).
    stop_after
        Stop after this many steps in total (the schedules still span
        ``config.train.steps``), writing a checkpoint: a time slice of a longer run.
    progress
        Show a tqdm progress bar (process 0 only).

    Under ``torchrun`` each process calls this with the same arguments.
    """
    out_dir = Path(out_dir)
    ctx = distributed_from_env()
    device = resolve_device(config.train.device, ctx.local_rank)
    with process_group(ctx, device):
        if ctx.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
        return _train(config, fields, out_dir, names, resume, stop_after, progress, ctx, device)


def _restore(
    config: ExperimentConfig,
    fields: Sequence[np.ndarray],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    checkpoint_path: Path,
    resume: bool,
    ctx: Distributed,
) -> tuple[int, ChannelStats]:
    """Load the checkpoint into ``model`` and ``optimizer`` if resuming; return the start step and channel stats."""
    if not (resume and checkpoint_path.exists()):
        seed_everything(config.train.seed + ctx.rank)
        return 0, compute_channel_stats(fields, config.crops.transform)
    state = torch.load(checkpoint_path, map_location=next(model.parameters()).device, weights_only=True)
    if resume_signature(state["config"]) != resume_signature(config.to_dict()):
        raise ValueError(f"{checkpoint_path} was written with a different config; use another --out or resume=False")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ctx.rank < len(state["rng"]):
        set_random_states(state["rng"][ctx.rank])
    else:  # resumed on more processes than saved the checkpoint
        seed_everything(config.train.seed + ctx.rank)
    return state["step"], ChannelStats.from_dict(state["channel_stats"])


def _optimisation_step(
    network: nn.Module,
    model: MAE | DINO,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    step: int,
    config: ExperimentConfig,
    amp: torch.autocast,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Set this step's learning rate and weight decay, then forward, backward, clip, update, EMA.

    Returns the schedule values and the method's metrics (with the gradient norm before clipping).
    """
    cfg = config.train
    lr = cosine_schedule(step, cfg.steps, cfg.base_lr * cfg.batch_size / 256, cfg.min_lr, cfg.warmup_steps)
    weight_decay = cosine_schedule(step, cfg.steps, cfg.weight_decay, cfg.weight_decay_end)
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = lr, weight_decay * group["apply_decay"]
    with amp:
        loss, metrics = network(batch, step)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{config.method} loss is {loss.item()} at step {step}; lower base_lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    model.after_backward(step)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad or math.inf)
    optimizer.step()
    model.after_optimizer_step(step, cfg.steps)
    return {"lr": lr, "weight_decay": weight_decay}, {**metrics, "grad_norm": grad_norm}


def _train(
    config: ExperimentConfig,
    fields: Sequence[np.ndarray],
    out_dir: Path,
    names: Sequence[str] | None,
    resume: bool,
    stop_after: int | None,
    progress: bool,
    ctx: Distributed,
    device: torch.device,
) -> TrainResult:
    """:func:`train` inside the process group, on ``device``."""
    cfg = config.train
    seed_everything(cfg.seed)  # the same initial weights in every process
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=0.0, betas=(cfg.beta1, cfg.beta2))
    start_step, stats = _restore(config, fields, model, optimizer, out_dir / CHECKPOINT, resume, ctx)
    end_step = min(cfg.steps, stop_after or cfg.steps)
    if ctx.rank == 0:
        truncate_metrics(out_dir / METRICS, start_step)
        atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", out_dir / "config.json")

    dataset = CropDataset(fields, config.crops, stats, seed=cfg.seed, names=names)
    sampler = StepBatchSampler(start_step, end_step, cfg.batch_size, ctx.rank, ctx.world_size)
    loader = crop_loader(dataset, sampler, cfg.num_workers, pin_memory=device.type == "cuda")
    network = model
    if ctx.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        network = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")

    model.train()
    record: dict = {}
    started = tick = time.perf_counter()
    bar = tqdm(total=end_step - start_step, desc=f"{config.method} pre-training", disable=not progress or ctx.rank > 0)
    with bar, open(out_dir / METRICS if ctx.rank == 0 else os.devnull, "a") as log:
        for step, batch in zip(range(start_step, end_step), loader):
            data_s = time.perf_counter() - tick
            schedule, metrics = _optimisation_step(network, model, optimizer, move_to(batch, device), step, config, amp)
            values = reduce_metrics(metrics, ctx)
            warnings = diagnose(config, values)
            step_s = time.perf_counter() - tick
            record = {
                "step": step,
                **schedule,
                **values,
                "warnings": warnings,
                "images_per_s": cfg.batch_size / step_s,
                "data_s": data_s,
                "step_s": step_s,
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            if warnings:
                bar.write(f"step {step}: possible collapse ({', '.join(warnings)}): {values}")
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            bar.update()
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end_step:
                rng = gather_random_states(ctx)
                if ctx.rank == 0:
                    save_checkpoint(out_dir, step + 1, config, model, optimizer, stats, rng)
            tick = time.perf_counter()
    total_time = time.perf_counter() - started
    images_per_s = (end_step - start_step) * cfg.batch_size / total_time if end_step > start_step else 0.0
    return TrainResult(model, end_step, record, images_per_s, out_dir)


def resumable(out_dir: str | Path, config: ExperimentConfig) -> bool:
    """Whether ``out_dir`` holds a checkpoint of ``config`` to resume (not one of another configuration).

    Pass it as :func:`train`'s ``resume``: a build whose run size
    changed then retrains instead of refusing the old checkpoint.
    """
    checkpoint = Path(out_dir) / CHECKPOINT
    if not checkpoint.exists():
        return False
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]
    return resume_signature(saved) == resume_signature(config.to_dict())


def settings_table(config: ExperimentConfig, real_config: ExperimentConfig) -> pd.DataFrame:
    """A pre-training run's settings as the book reports them (``setting``, ``value``): the encoder, the method's
    crops and head, and the steps of the screen's run and of the real fields' run (``real_config``).
    """
    encoder, crops = config.encoder, config.crops
    rows = [
        {"setting": "encoder", "value": f"ViT-{encoder.size}, {encoder.depth} blocks, {encoder.patch_size} px patches"}
    ]
    if config.method == "mae":
        rows += [
            {
                "setting": "crop",
                "value": f"{crops.global_size} px, native resolution, {crops.transform}, "
                f"{crops.standardise} standardisation",
            },
            {"setting": "mask ratio", "value": f"{config.mae.mask_ratio:g}"},
            {"setting": "decoder", "value": f"{config.mae.decoder_dim}-d × {config.mae.decoder_depth} blocks"},
        ]
    else:
        rows += [
            {
                "setting": "views per sample",
                "value": f"{crops.n_global} × {crops.global_size} px global, "
                f"{crops.n_local} × {crops.local_size} px local, from a "
                f"{crops.region_size} px region",
            },
            {
                "setting": "head",
                "value": f"{config.dino.out_dim} prototypes, {config.dino.head_bottleneck_dim}-d bottleneck",
            },
            {
                "setting": "temperatures",
                "value": f"teacher {config.dino.teacher_temp:g}, student {config.dino.student_temp:g}",
            },
            {"setting": "teacher momentum", "value": f"{config.dino.teacher_momentum:g} → 1"},
        ]
    rows += [
        {"setting": "steps × batch (screen)", "value": f"{config.train.steps} × {config.train.batch_size}"},
        {
            "setting": "steps × batch (real fields)",
            "value": f"{real_config.train.steps} × {real_config.train.batch_size}",
        },
        {"setting": "peak learning rate", "value": f"{config.train.base_lr * config.train.batch_size / 256:.2g}"},
    ]
    return pd.DataFrame(rows)
