"""Tests for cellstudy.cli's ``train`` subcommand and its torchrun helpers (``query`` is tested in test_query.py)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cellstudy import cli
from cellstudy.cli import main
from cellstudy.fieldstore import write_field_table
from cellstudy.images import list_fields, write_field
from cellstudy.train import ENCODER, apply_overrides, default_config, load_encoder

OPTIONS = ["--profile", "cpu", "--steps", "2", "--batch-size", "2", "--device", "cpu"]
"""Two steps of the CPU profile on 2 crops."""


def encoder_weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / ENCODER, map_location="cpu", weights_only=True)["encoder"]


def test_training_from_a_field_table_equals_training_on_the_fields_in_memory(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for well, field in (("A01", 1), ("A01", 2), ("D14", 1)):
        write_field(tmp_path / "screen" / "P1", well, field, rng.poisson(200, (5, 64, 72)).astype(np.uint16))
    table = list_fields(tmp_path / "screen" / "P1")  # the order load_fields reads them in
    write_field_table(table, tmp_path / "screen" / "fields.csv")

    main(["train", "mae", "--fields-table", str(tmp_path / "screen" / "fields.csv"), "--out", str(tmp_path / "lazy"),
          *OPTIONS])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2
    main(["train", "mae", "--images", str(tmp_path / "screen"), "--out", str(tmp_path / "memory"), *OPTIONS])
    lazy, memory = encoder_weights(tmp_path / "lazy"), encoder_weights(tmp_path / "memory")
    assert lazy.keys() == memory.keys() and all(torch.equal(lazy[name], memory[name]) for name in lazy)


def test_train_needs_exactly_one_source_of_fields(tmp_path):
    for sources in ([], ["--images", "x", "--fields-table", "y.csv"]):
        with pytest.raises(SystemExit):
            main(["train", "mae", "--out", str(tmp_path), *sources])


def test_torchrun_command_runs_the_train_subcommand(tmp_path):
    command = cli.torchrun_command("dino", "fields.csv", tmp_path, "c.json", 4, resume=False)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    args = cli.build_parser().parse_args(command[command.index("cellstudy.cli") + 1:])
    assert (args.method, args.fields_table, args.out, args.config, args.no_resume, args.images) == (
        "dino", "fields.csv", str(tmp_path), "c.json", True, None)


def test_torchrun_train_trains_in_two_processes(tmp_path):
    rng = np.random.default_rng(1)
    table = []
    for well in ("A01", "B02"):
        write_field(tmp_path / "P1", well, 1, rng.poisson(200, (5, 64, 64)).astype(np.uint16))
        table.append({"folder": str(tmp_path / "P1"), "well": well, "field": 1})
    write_field_table(pd.DataFrame(table), tmp_path / "fields.csv")
    config = apply_overrides(default_config("mae", "cpu"), {"train": {"steps": 2, "batch_size": 4, "device": "cpu"}})
    cli.torchrun_train(config, tmp_path / "fields.csv", tmp_path / "model", n_processes=2)
    assert load_encoder(tmp_path / "model" / ENCODER).step == 2
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == config.to_dict()
