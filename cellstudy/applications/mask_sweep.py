"""MAE mask-ratio sweep at equal compute (claim C2: masking 75 % of the patches is a good ratio).

**Compute** is the training FLOPs: steps x batch x the FLOPs of one crop's training step. A step's
backward pass costs about twice its forward pass in every layer, so equal training FLOPs means equal
``steps x`` :func:`mae_forward_flops`. A higher mask ratio shows the encoder fewer tokens, so a step is
cheaper and the run gets more steps (the decoder, which sees every token, costs the same at every ratio):

    ``steps(r) = round(steps_ref x F(r_ref) / F(r))``

with ``F`` = :func:`mae_forward_flops`, ``r_ref`` and ``steps_ref`` the reference configuration's mask
ratio and steps (:func:`equal_compute_steps`). Warm-up is scaled by the same factor; the batch, learning
rates and everything else stay the reference's.

Each ratio's encoder is trained into ``<out_dir>/mask_<ratio>`` (resumable), the screen's wells are
embedded with it, post-processed as every learned embedding of the study
(:data:`cellstudy.profiling.profiles.EMBEDDING_POSTPROCESSING`) and scored by the CPJUMP1 retrieval tasks
(:func:`cellstudy.evaluation.retrieval.run_tasks`): mAP and fraction retrieved per task and modality.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from cellstudy.evaluation import retrieval
from cellstudy.evaluation.retrieval import MapSettings
from cellstudy.models.mae import num_visible
from cellstudy.models.vit import SIZES
from cellstudy.profiling import embed
from cellstudy.profiling.profiles import EMBEDDING_POSTPROCESSING, postprocess
from cellstudy.training.train import (
    ENCODER,
    ExperimentConfig,
    apply_overrides,
    load_encoder,
    resumable,
    train,
)

MASK_RATIOS = (0.5, 0.75, 0.9)
"""Mask ratios of the sweep: below, at and above He et al.'s 0.75."""
MLP_RATIO = 4
"""Hidden width of the transformer blocks' MLP over their width (timm's and :mod:`cellstudy.models.mae`'s)."""
MAP_SETTINGS = MapSettings()
"""Retrieval-test settings unless others are given (the paper's null size of 100,000)."""
SWEEP_COLUMNS = ["mask_ratio", "steps", "train_flops"]
"""Columns :func:`mask_ratio_sweep` puts before :func:`cellstudy.evaluation.retrieval.fraction_retrieved`'s."""


def block_macs(tokens: int, width: int) -> int:
    """Multiply-accumulates of one transformer block on ``tokens`` tokens: the q, k, v and output
    projections (``4 d^2`` per token), the MLP (``2 x MLP_RATIO x d^2``) and the two attention
    products (``2 n d`` per token).
    """
    return tokens * (4 + 2 * MLP_RATIO) * width**2 + 2 * tokens**2 * width


def mae_forward_flops(config: ExperimentConfig) -> int:
    """FLOPs (2 per multiply-accumulate) of MAE's forward pass on one crop, matrix products only.

    Patch projection of all ``L`` tokens; encoder blocks on the visible tokens plus the class token; the
    decoder's input projection on those, its blocks on all ``L + 1`` tokens and its pixel prediction.
    Norms, activations and the softmax (a few per cent) are left out.
    """
    encoder, mae = config.encoder, config.mae
    width, standard_depth, _ = SIZES[encoder.size]
    depth = encoder.depth or standard_depth
    grid = config.crops.global_size // encoder.patch_size
    tokens = grid**2 * (encoder.in_chans if encoder.channel_agnostic else 1)
    patch_dim = encoder.patch_size**2 * (1 if encoder.channel_agnostic else encoder.in_chans)
    seen = num_visible(tokens, mae.mask_ratio) + 1
    macs = (
        tokens * patch_dim * width
        + depth * block_macs(seen, width)
        + seen * width * mae.decoder_dim
        + mae.decoder_depth * block_macs(tokens + 1, mae.decoder_dim)
        + (tokens + 1) * mae.decoder_dim * patch_dim
    )
    return 2 * macs


def equal_compute_steps(reference: ExperimentConfig, mask_ratio: float) -> int:
    """Steps at ``mask_ratio`` with the training FLOPs of ``reference`` (its steps at its mask ratio), at least 1."""
    at_ratio = apply_overrides(reference, {"mae": {"mask_ratio": mask_ratio}})
    return max(1, round(reference.train.steps * mae_forward_flops(reference) / mae_forward_flops(at_ratio)))


def sweep_config(reference: ExperimentConfig, mask_ratio: float) -> ExperimentConfig:
    """``reference`` at ``mask_ratio``, with :func:`equal_compute_steps` steps and the warm-up scaled alike."""
    if reference.method != "mae":
        raise ValueError(f"the mask-ratio sweep trains MAE, got a {reference.method!r} configuration")
    steps = equal_compute_steps(reference, mask_ratio)
    warmup = round(reference.train.warmup_steps * steps / reference.train.steps)
    return apply_overrides(
        reference, {"mae": {"mask_ratio": mask_ratio}, "train": {"steps": steps, "warmup_steps": warmup}}
    )


def training_flops(config: ExperimentConfig) -> int:
    """Approximate FLOPs of a whole run: ``3 x`` forward (backward about twice forward) ``x steps x batch``."""
    return 3 * mae_forward_flops(config) * config.train.steps * config.train.batch_size


def ratio_dir(out_dir: str | os.PathLike, mask_ratio: float) -> Path:
    """The model folder of one ratio: ``<out_dir>/mask_<ratio>`` (e.g. ``mask_0.75``)."""
    return Path(out_dir) / f"mask_{mask_ratio:g}"


def train_ratio(
    reference: ExperimentConfig,
    mask_ratio: float,
    fields: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume, or find finished) the encoder of one ratio in :func:`ratio_dir`; its ``encoder.pt``."""
    config, folder = sweep_config(reference, mask_ratio), ratio_dir(out_dir, mask_ratio)
    train(config, fields, folder, names=names, resume=resumable(folder, config), progress=progress)
    return folder / ENCODER


def retrieval_scores(
    encoder_path: str | os.PathLike,
    field_table: pd.DataFrame,
    map_settings: MapSettings = MAP_SETTINGS,
    **embed_options,
) -> pd.DataFrame:
    """Embed a screen's wells with an encoder, post-process and score them.

    :func:`cellstudy.profiling.embed.embed` (``embed_options`` go to :func:`~cellstudy.profiling.embed.embed_fields`), then
    :func:`cellstudy.profiling.profiles.postprocess` with :data:`~cellstudy.profiling.profiles.EMBEDDING_POSTPROCESSING`, then
    :func:`cellstudy.evaluation.retrieval.run_tasks`; returns :func:`cellstudy.evaluation.retrieval.fraction_retrieved` of the
    results, without the groups that have no unit to test (no replicable perturbation to match).
    """
    profiles = postprocess(
        embed.embed(load_encoder(encoder_path), field_table, **embed_options), EMBEDDING_POSTPROCESSING
    )
    summary = retrieval.fraction_retrieved(retrieval.run_tasks(profiles, map_settings))
    return summary[summary["n"] > 0].reset_index(drop=True)


def mask_ratio_sweep(
    reference: ExperimentConfig,
    training_fields: Sequence[np.ndarray],
    field_table: pd.DataFrame,
    out_dir: str | os.PathLike,
    mask_ratios: Sequence[float] = MASK_RATIOS,
    map_settings: MapSettings = MAP_SETTINGS,
    names: Sequence[str] | None = None,
    progress: bool = True,
    **embed_options,
) -> pd.DataFrame:
    """Pre-train MAE at each mask ratio with equal compute, and score each encoder's well profiles.

    Parameters
    ----------
    reference
        MAE configuration whose steps at its own mask ratio set the compute budget
        (e.g. the MAE configuration of notebook 3's pre-training run).
    training_fields
        ``(C, H, W)`` fields to pre-train on (:func:`cellstudy.profiling.embed.read_fields`), with their ``names``.
    field_table
        The screen to embed and score (``folder``, ``well``, ``field``, ``Metadata_*``, optionally
        :data:`cellstudy.data.images.LAYOUT`).
    out_dir
        Receives one model folder per ratio (:func:`ratio_dir`); finished or stopped runs are resumed.
    mask_ratios
        Ratios to train, each in [0, 1).
    map_settings
        Permutation-test settings of the retrieval tasks.
    progress
        Show progress bars.
    embed_options
        Passed to :func:`cellstudy.profiling.embed.embed_fields` (e.g. ``max_tiles_per_field``, ``batch_size``).

    Returns
    -------
    Per ratio and :func:`cellstudy.evaluation.retrieval.fraction_retrieved` row (task, cell type, modality, time point,
    genetic modality and time point): :data:`SWEEP_COLUMNS`, then ``n``, ``fraction_retrieved`` and
    ``mean_average_precision``.
    """
    tables = []
    for mask_ratio in tqdm(mask_ratios, desc="mask ratios", unit="ratio", disable=not progress):
        config = sweep_config(reference, mask_ratio)
        encoder_path = train_ratio(reference, mask_ratio, training_fields, out_dir, names, progress)
        scores = retrieval_scores(encoder_path, field_table, map_settings, progress=progress, **embed_options)
        tables.append(
            scores.assign(mask_ratio=mask_ratio, steps=config.train.steps, train_flops=training_flops(config))
        )
    table = pd.concat(tables, ignore_index=True)
    return table[SWEEP_COLUMNS + [column for column in table.columns if column not in SWEEP_COLUMNS]]
