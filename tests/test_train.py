"""Tests for cellstudy.training.train and the ``train`` CLI: schedules, sampler, determinism, exact resume, DDP."""

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cellstudy.cli import main
from cellstudy.data.images import write_field
from cellstudy.training import train as train_module
from cellstudy.training.crops import CropDataset, compute_channel_stats
from cellstudy.training.train import (
    CHECKPOINT,
    ENCODER,
    METRICS,
    ExperimentConfig,
    StepBatchSampler,
    apply_overrides,
    build_model,
    cosine_schedule,
    default_config,
    load_config,
    load_encoder,
    read_metrics,
    train,
)

STEPS = 6
LOGGED = ("step", "loss", "lr", "weight_decay", "grad_norm")
"""Log columns that must be reproduced exactly (not the timings)."""


def tiny_config(method: str, **train_options) -> ExperimentConfig:
    """A few-second configuration: one block, 32 px crops (DINO: 48 px regions, two 16 px local crops)."""
    overrides = {
        "encoder": {"depth": 1, "img_size": 32},
        "crops": {"global_size": 32, "region_size": 32},
        "train": {
            "steps": STEPS,
            "batch_size": 4,
            "warmup_steps": 2,
            "checkpoint_every": 2,
            "device": "cpu",
            **train_options,
        },
        "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
        "dino": {
            "out_dim": 64,
            "head_hidden_dim": 32,
            "head_bottleneck_dim": 16,
            "warmup_teacher_temp_steps": 3,
            "warmup_teacher_temp": 0.02,
            "freeze_last_layer_steps": 2,
        },
    }
    if method == "dino":
        overrides["crops"] = {"global_size": 32, "region_size": 48, "local_size": 16, "n_local": 2}
    return apply_overrides(default_config(method), overrides)


def synthetic_fields(n: int = 2, size: int = 96) -> list[np.ndarray]:
    """Fields with Poisson background and bright Gaussian 'nuclei' in the DNA channel."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    fields = []
    for _ in range(n):
        field = rng.poisson(200, size=(5, size, size)).astype(np.float64)
        for cy, cx in rng.integers(5, size - 5, size=(8, 2)):
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
            field += blob * rng.uniform(500, 3000, size=(5, 1, 1))
        fields.append(field.astype(np.uint16))
    return fields


FIELDS = synthetic_fields()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and waiting threads stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(method: str, out, **kwargs):
    return train(tiny_config(method), FIELDS, out, progress=False, **kwargs)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def logged(out) -> list[tuple]:
    return [tuple(record[key] for key in LOGGED) for record in read_metrics(out / METRICS)]


def test_cosine_schedule_closed_forms():
    assert cosine_schedule(0, 100, 1.0, 0.1, warmup_steps=10) == 0.0
    assert cosine_schedule(5, 100, 1.0, 0.1, warmup_steps=10, warmup_start=0.2) == pytest.approx(0.6)
    assert cosine_schedule(10, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_schedule(55, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.55)
    assert cosine_schedule(100, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_schedule(25, 100, 0.04, 0.4) == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi / 4)) / 2)


def test_step_sampler_splits_the_global_batch_over_ranks():
    single = list(StepBatchSampler(3, 5, 8))
    ranks = [list(StepBatchSampler(3, 5, 8, rank, 2)) for rank in range(2)]
    assert single == [list(range(24, 32)), list(range(32, 40))]
    assert [ranks[0][i] + ranks[1][i] for i in range(2)] == single
    with pytest.raises(ValueError, match="batch size 8 does not divide over 3"):
        StepBatchSampler(0, 1, 8, 0, 3)


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_same_seed_same_numbers(tmp_path, method):
    first, second = run(method, tmp_path / "a"), run(method, tmp_path / "b")
    assert states_equal(first.model.state_dict(), second.model.state_dict())
    assert logged(tmp_path / "a") == logged(tmp_path / "b") and len(logged(tmp_path / "a")) == STEPS
    other = train(tiny_config(method, seed=1), FIELDS, tmp_path / "c", progress=False)
    assert not states_equal(first.model.state_dict(), other.model.state_dict())


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_resume_after_interruption_is_exact(tmp_path, method):
    whole = run(method, tmp_path / "whole")
    run(method, tmp_path / "cut", stop_after=3)  # checkpoints at steps 2 and 3
    state = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert state["step"] == 3 and state["samples_seen"] == 12
    with open(tmp_path / "cut" / METRICS, "a") as log:  # a crash after step 3 logged more, then tore a line
        log.write(
            json.dumps({"step": 3, "loss": 0.0, "lr": 0, "weight_decay": 0, "grad_norm": 0}) + '\n{"step": 4, "lo'
        )
    resumed = run(method, tmp_path / "cut")
    assert states_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert logged(tmp_path / "whole") == logged(tmp_path / "cut")
    if method == "dino":
        assert not torch.equal(resumed.model.center, torch.zeros_like(resumed.model.center))


def test_resume_refuses_a_different_config(tmp_path):
    run("mae", tmp_path, stop_after=2)
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config("mae", base_lr=1.0e-2), FIELDS, tmp_path, progress=False)
    train(tiny_config("mae", num_workers=1), FIELDS, tmp_path, progress=False, stop_after=3)  # runtime-only change


def test_encoder_file_reproduces_the_exported_encoder(tmp_path):
    result = run("dino", tmp_path)
    loaded = load_encoder(tmp_path / ENCODER)
    assert loaded.method == "dino" and loaded.step == STEPS and loaded.crops.n_local == 2
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(x), result.model.export_encoder()(x), rtol=0, atol=0)
    assert loaded.stats.transform == "log1p" and len(loaded.stats.mean) == 5


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One process of a 2-process gloo job: trains MAE then DINO, saving its final weights."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    for method in ("mae", "dino"):
        result = train(tiny_config(method), synthetic_fields(), os.path.join(out, method), progress=False)
        torch.save(result.model.state_dict(), os.path.join(out, method, f"rank{rank}.pt"))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_two_processes_match_a_single_process_run(tmp_path):
    """2 gloo processes x 2 samples equal 1 process x 4 samples (averaged gradients; DINO: all-reduced centre)."""
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    for method in ("mae", "dino"):
        out = tmp_path / "ddp" / method
        rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
        assert states_equal(rank0, rank1)
        single = run(method, tmp_path / method).model.state_dict()
        for key, value in single.items():
            torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5, msg=f"{method} {key}")
        losses = [record["loss"] for record in read_metrics(out / METRICS)]
        expected = [record["loss"] for record in read_metrics(tmp_path / method / METRICS)]
        assert losses == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_bf16_autocast_step_keeps_float32_loss(method):
    """The CUDA mixed-precision path, exercised with CPU autocast: losses and centre stay float32."""
    config = tiny_config(method)
    model = build_model(config)
    dataset = CropDataset(FIELDS, config.crops, compute_channel_stats(FIELDS))
    batch = torch.utils.data.default_collate([dataset[i] for i in range(2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, metrics = model(batch, step=0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and metrics["loss"] == loss
    assert method == "mae" or model.center.dtype == torch.float32


def test_config_overrides_and_profiles(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"steps": 7}, "mae": {"mask_ratio": 0.5}}))
    config = load_config(path, "mae")
    assert config.train.steps == 7 and config.mae.mask_ratio == 0.5 and config.encoder.patch_size == 8
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    path.write_text(json.dumps({"train": {"stepz": 7}}))
    with pytest.raises(ValueError, match=r"config.json.train: unknown option 'stepz'"):
        load_config(path, "mae")
    with pytest.raises(ValueError, match=r"cli.train.steps: expected int, got '7'"):
        apply_overrides(config, {"train": {"steps": "7"}}, "cli")
    with pytest.raises(ValueError, match=r"cli.mae: expected a section of options"):
        apply_overrides(config, {"mae": 0.75}, "cli")
    assert apply_overrides(config, {"train": {"base_lr": 1}}).train.base_lr == 1
    gpu = default_config("dino", "gpu-vit-s16-224")
    assert (gpu.encoder.size, gpu.encoder.patch_size, gpu.crops.global_size, gpu.crops.n_global) == (
        "small",
        16,
        224,
        2,
    )


def test_cli_trains_from_an_image_folder(tmp_path, capsys):
    for well, field in zip(("D14", "L09"), FIELDS):
        write_field(tmp_path / "images", well, 5, field)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config("mae").to_dict()))
    main(
        [
            "train",
            "mae",
            "--config",
            str(config),
            "--images",
            str(tmp_path / "images"),
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "2",
            "--batch-size",
            "2",
        ]
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and (tmp_path / "out" / ENCODER).exists()
    assert json.loads((tmp_path / "out" / "config.json").read_text())["train"]["batch_size"] == 2


def test_settings_table_reports_the_config():
    mae, dino = default_config("mae"), default_config("dino")
    table = train_module.settings_table(mae, apply_overrides(mae, {"train": {"steps": 7}})).set_index("setting")[
        "value"
    ]
    assert table["mask ratio"] == f"{mae.mae.mask_ratio:g}"
    assert table["steps × batch (real fields)"] == f"7 × {mae.train.batch_size}"
    assert table["peak learning rate"] == f"{mae.train.base_lr * mae.train.batch_size / 256:.2g}"
    views = train_module.settings_table(dino, dino).set_index("setting")["value"]["views per sample"]
    assert views.startswith(f"{dino.crops.n_global} × {dino.crops.global_size} px global")
