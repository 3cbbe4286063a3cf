"""Tests for cellstudy.applications.mask_sweep: FLOP count against torch's counter, the equal-compute step rule,
per-ratio training folders, one score row per ratio and task, resuming."""

import json

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cellstudy.applications import mask_sweep
from cellstudy.evaluation.retrieval import MapSettings
from cellstudy.profiling.embed import read_fields
from cellstudy.simulation import simulate
from cellstudy.training import train
from cellstudy.training.train import apply_overrides, build_model, default_config

TINY = {
    "encoder": {"depth": 1, "img_size": 32},
    "crops": {"global_size": 32, "region_size": 32},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 2, "device": "cpu"},
    "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
}
"""A one-block ViT on 32 px crops, four MAE steps."""
RATIOS = (0.5, 0.75, 0.9)


def counted_forward_flops(config: train.ExperimentConfig) -> int:
    """FLOPs of one crop's MAE forward pass as torch's FlopCounterMode counts them (attention unfused, so
    that its matrix products are counted too)."""
    model = build_model(config)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    size = config.crops.global_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.reconstruct(torch.randn(1, config.encoder.in_chans, size, size))
    return counter.get_total_flops()


@pytest.mark.parametrize("mask_ratio", [0.0, 0.25, 0.75, 0.9])
@pytest.mark.parametrize("encoder", [{}, {"channel_agnostic": True, "depth": 2}, {"size": "small", "depth": 1}])
def test_forward_flops_are_those_torch_counts(mask_ratio, encoder):
    config = apply_overrides(default_config("mae"), {"encoder": encoder, "mae": {"mask_ratio": mask_ratio}})
    assert mask_sweep.mae_forward_flops(config) == counted_forward_flops(config)


@pytest.mark.parametrize("mask_ratio", [0.25, 0.5, 0.75, 0.9])
def test_equal_compute_steps_spend_the_reference_budget(mask_ratio):
    reference = apply_overrides(default_config("mae"), {**TINY, "train": {"steps": 1000}})  # at mask ratio 0.75
    at_ratio = apply_overrides(reference, {"mae": {"mask_ratio": mask_ratio}})
    budget = reference.train.steps * counted_forward_flops(reference)
    steps = mask_sweep.equal_compute_steps(reference, mask_ratio)
    assert steps == round(budget / counted_forward_flops(at_ratio))
    assert abs(steps * counted_forward_flops(at_ratio) - budget) <= counted_forward_flops(at_ratio) / 2


def test_more_masking_means_more_steps_and_the_reference_keeps_its_own():
    reference = default_config("mae")
    steps = [mask_sweep.equal_compute_steps(reference, ratio) for ratio in (0.25, 0.5, 0.75, 0.9)]
    assert steps == sorted(steps) and len(set(steps)) == 4
    assert steps[2] == reference.train.steps


def test_sweep_config_changes_only_the_ratio_steps_and_warmup():
    reference = default_config("mae")
    config = mask_sweep.sweep_config(reference, 0.5)
    steps = mask_sweep.equal_compute_steps(reference, 0.5)
    expected = apply_overrides(
        reference,
        {
            "mae": {"mask_ratio": 0.5},
            "train": {
                "steps": steps,
                "warmup_steps": round(reference.train.warmup_steps * steps / reference.train.steps),
            },
        },
    )
    assert config == expected
    with pytest.raises(ValueError, match="dino"):
        mask_sweep.sweep_config(default_config("dino"), 0.5)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep on the quick simulated screen with a tiny encoder; the table and its output folder."""
    screen = simulate.simulate(simulate.QUICK_CONFIG, tmp_path_factory.mktemp("screen"), progress=False)
    table = screen.field_table()
    fields, names = read_fields(table.head(6), progress=False)
    out = tmp_path_factory.mktemp("sweep")
    reference = apply_overrides(default_config("mae"), TINY)
    arguments = (reference, fields, table, out, RATIOS, MapSettings(null_size=200))
    options = {"names": names, "progress": False, "max_tiles_per_field": 2}
    return mask_sweep.mask_ratio_sweep(*arguments, **options), out, arguments, options


def test_each_ratio_is_trained_in_its_own_folder_with_its_steps(sweep):
    result, out, (reference, *_), _ = sweep
    for ratio in RATIOS:
        checkpoint = torch.load(mask_sweep.ratio_dir(out, ratio) / train.CHECKPOINT, weights_only=True)
        assert checkpoint["config"]["mae"]["mask_ratio"] == ratio
        assert checkpoint["step"] == mask_sweep.equal_compute_steps(reference, ratio)
        assert set(result.loc[result["mask_ratio"] == ratio, "steps"]) == {checkpoint["step"]}
    assert sorted(path.name for path in out.iterdir()) == ["mask_0.5", "mask_0.75", "mask_0.9"]


def test_one_row_per_ratio_and_task_group(sweep):
    result = sweep[0]
    assert list(result.columns[:3]) == mask_sweep.SWEEP_COLUMNS
    keys = ["mask_ratio", "task", "Metadata_modality", "Metadata_genetic_modality"]
    assert result.groupby(keys, dropna=False).size().eq(1).all()
    replicates = result[result["task"] == "replicate_retrieval"]
    assert set(zip(replicates["mask_ratio"], replicates["Metadata_modality"])) == {
        (ratio, modality) for ratio in RATIOS for modality in ("compound", "crispr", "orf")
    }
    assert (result["n"] > 0).all()  # groups without units are left out
    assert result["fraction_retrieved"].between(0, 1).all()
    assert result["mean_average_precision"].between(0, 1).all()


def test_a_finished_sweep_resumes_without_training_and_repeats_its_numbers(sweep):
    result, out, arguments, options = sweep
    logs = {ratio: (mask_sweep.ratio_dir(out, ratio) / train.METRICS).read_text() for ratio in RATIOS}
    again = mask_sweep.mask_ratio_sweep(*arguments, **options)
    pd.testing.assert_frame_equal(result, again)
    for ratio, log in logs.items():
        assert (mask_sweep.ratio_dir(out, ratio) / train.METRICS).read_text() == log
        assert (
            len([json.loads(line) for line in log.splitlines()])
            == result.loc[result["mask_ratio"] == ratio, "steps"].iloc[0]
        )
