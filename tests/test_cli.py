"""Tests for cellstudy.cli's ``train`` subcommand and its torchrun helpers (``query`` is tested in test_query.py)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cellstudy import cli
from cellstudy.cli import main
from cellstudy.data.fieldstore import write_field_table
from cellstudy.data.images import DAOY_CHANNELS, list_fields, write_field
from cellstudy.training import distributed
from cellstudy.training.train import (
    ENCODER,
    apply_overrides,
    default_config,
    load_encoder,
)

OPTIONS = ["--preset", "cpu", "--steps", "2", "--batch-size", "2", "--device", "cpu"]
"""Two steps of the CPU profile on 2 crops."""


def encoder_weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / ENCODER, map_location="cpu", weights_only=True)["encoder"]


def test_training_from_a_field_table_equals_training_on_the_fields_in_memory(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for well, field in (("A01", 1), ("A01", 2), ("D14", 1)):
        write_field(tmp_path / "screen" / "P1", well, field, rng.poisson(200, (5, 64, 72)).astype(np.uint16))
    table = list_fields(tmp_path / "screen" / "P1")  # the order load_fields reads them in
    write_field_table(table, tmp_path / "screen" / "fields.csv")

    main(
        [
            "train",
            "mae",
            "--fields-table",
            str(tmp_path / "screen" / "fields.csv"),
            "--out",
            str(tmp_path / "lazy"),
            *OPTIONS,
        ]
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2
    main(["train", "mae", "--images", str(tmp_path / "screen"), "--out", str(tmp_path / "memory"), *OPTIONS])
    lazy, memory = encoder_weights(tmp_path / "lazy"), encoder_weights(tmp_path / "memory")
    assert lazy.keys() == memory.keys() and all(torch.equal(lazy[name], memory[name]) for name in lazy)


def trained_fields(argv: list[str], monkeypatch) -> list[np.ndarray]:
    """The fields ``main(argv)`` hands to training (replaced by a stub that only reads them)."""
    received = []

    def read_only(config, fields, out, **options):
        received.extend(fields)
        return SimpleNamespace(step=0, images_per_s=0.0, last_metrics={}, out_dir=out)

    monkeypatch.setattr(cli, "train", read_only)
    main(argv)
    return received


def test_channel_map_is_the_layout_of_listed_fields_and_of_table_rows_without_one(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    written = [rng.integers(0, 65536, (5, 16, 16), dtype=np.uint16) for _ in range(2)]
    for field, image in enumerate(written, start=1):
        write_field(tmp_path / "P1", "A01", field, image, DAOY_CHANNELS)
    write_field_table(list_fields(tmp_path / "P1"), tmp_path / "plain.csv")  # no layout column
    write_field_table(list_fields(tmp_path / "P1", "daoy"), tmp_path / "daoy.csv")
    train = ["train", "mae", "--out", str(tmp_path / "out")]
    for source in (
        ["--images", str(tmp_path / "P1"), "--channel-map", "daoy"],
        ["--fields-table", str(tmp_path / "plain.csv"), "--channel-map", "daoy"],
        ["--fields-table", str(tmp_path / "daoy.csv")],
    ):  # the table's layout, not the default
        fields = trained_fields([*train, *source], monkeypatch)
        assert [field.tobytes() for field in fields] == [image.tobytes() for image in written]
    capsys.readouterr()
    message = one_line_error([*train, "--fields-table", str(tmp_path / "plain.csv")], capsys)
    assert "r01c01f01p01-ch1" in message  # read as CPJUMP1, the DAOY files lack ch1


def test_train_needs_exactly_one_source_of_fields(tmp_path):
    for sources in ([], ["--images", "x", "--fields-table", "y.csv"]):
        with pytest.raises(SystemExit):
            main(["train", "mae", "--out", str(tmp_path), *sources])


def test_torchrun_command_runs_the_train_subcommand(tmp_path):
    command = distributed.torchrun_command("dino", "fields.csv", tmp_path, "c.json", 4, resume=False)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    args = cli.build_parser().parse_args(command[command.index("cellstudy.cli") + 1 :])
    assert (args.method, args.fields_table, args.out, args.config, args.no_resume, args.images) == (
        "dino",
        "fields.csv",
        str(tmp_path),
        "c.json",
        True,
        None,
    )


def test_torchrun_train_trains_in_two_processes(tmp_path):
    rng = np.random.default_rng(1)
    table = []
    for well in ("A01", "B02"):
        write_field(tmp_path / "P1", well, 1, rng.poisson(200, (5, 64, 64)).astype(np.uint16))
        table.append({"folder": str(tmp_path / "P1"), "well": well, "field": 1})
    write_field_table(pd.DataFrame(table), tmp_path / "fields.csv")
    config = apply_overrides(default_config("mae", "cpu"), {"train": {"steps": 2, "batch_size": 4, "device": "cpu"}})
    distributed.torchrun_train(config, tmp_path / "fields.csv", tmp_path / "model", n_processes=2)
    assert load_encoder(tmp_path / "model" / ENCODER).step == 2
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == config.to_dict()


def one_line_error(argv: list[str], capsys) -> str:
    """The message of the ``cellstudy: error:`` line that ``main(argv)`` exits with (status 2, nothing else printed)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    printed = capsys.readouterr()
    assert exited.value.code == 2 and printed.out == ""
    assert printed.err.startswith("cellstudy: error: ") and printed.err.count("\n") == 1 and printed.err.endswith("\n")
    return printed.err.removeprefix("cellstudy: error: ").strip()


def test_missing_or_folder_profiles_are_reported_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.csv"
    message = one_line_error(["query", "compound", "x", "--profiles", str(missing)], capsys)
    assert message == f"No such file or directory: {missing}"
    message = one_line_error(["query", "gene", "x", "--profiles", str(tmp_path)], capsys)
    assert message == f"Is a directory: {tmp_path}"


def test_train_mistakes_are_reported_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"train": {"stepz": 5}}))
    message = one_line_error(
        ["train", "mae", "--images", str(tmp_path), "--out", str(tmp_path / "m"), "--config", str(config)], capsys
    )
    assert "unknown option 'stepz'" in message
    (tmp_path / "fields.csv").write_text("folder,well\nP1,A01\n")
    message = one_line_error(
        ["train", "mae", "--fields-table", str(tmp_path / "fields.csv"), "--out", str(tmp_path / "m")], capsys
    )
    assert message == f"{tmp_path / 'fields.csv'} lacks field-table column(s) ['field']"  # a KeyError's text, no repr
    message = one_line_error(
        ["train", "mae", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "m")], capsys
    )
    assert message.startswith("no Phenix-named field images") and str(tmp_path / "empty") in message


def test_programming_errors_keep_their_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setitem(cli.QUERIES, "compound", (broken, []))
    monkeypatch.setattr(cli.query, "read_profiles", lambda path: None)
    with pytest.raises(TypeError, match="a bug"):
        main(["query", "compound", "x", "--profiles", str(tmp_path / "p.csv")])
