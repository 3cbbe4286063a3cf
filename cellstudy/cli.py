"""Command-line interface: ``cellstudy <subcommand> ...``.

Each subcommand is one ``add_<name>_parser`` function (its options) and one
``run_<name>`` function (what it does); :func:`build_parser` collects them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cellstudy import query
from cellstudy.crops import load_fields
from cellstudy.fieldstore import FieldStore
from cellstudy.files import atomic_path
from cellstudy.images import CPJUMP1_CHANNELS, DAOY_CHANNELS
from cellstudy.train import (
    METHODS,
    PROFILES,
    ExperimentConfig,
    apply_overrides,
    atomic_write_text,
    load_config,
    train,
)

CHANNEL_MAPS = {"cpjump1": CPJUMP1_CHANNELS, "daoy": DAOY_CHANNELS}
"""Named stain -> channel-number maps for ``--channel-map``."""
QUERIES = {"compound": (query.rank_genes, query.GENE_LIST), "gene": (query.rank_compounds, query.COMPOUND_LIST)}
"""``cellstudy query KIND``: the ranking function and the columns that identify one of its lists."""
REQUESTED_CONFIG = "requested_config.json"
"""File in the output folder that :func:`torchrun_train` passes to ``cellstudy train --config``."""


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """``cellstudy train mae|dino``: self-supervised pre-training of a ViT encoder."""
    parser = subparsers.add_parser(
        "train",
        help="pre-train a ViT encoder with MAE or DINO",
        description="Pre-train a ViT on random crops of 5-channel fields; resumes from OUT/checkpoint.pt. "
        "For several GPUs: torchrun --nproc_per_node N -m cellstudy.cli train mae "
        "--fields-table build/gallery/fields.csv --profile gpu-vit-s16-224 --out build/models/mae",
    )
    parser.add_argument("method", choices=METHODS)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder searched recursively for Phenix-named TIFF fields (read into memory)")
    source.add_argument(
        "--fields-table",
        help="field-table CSV (columns folder, well, field; e.g. build/gallery/fields.csv); "
        "each field is read from disk when a crop needs it, so the fields need not fit in memory",
    )
    parser.add_argument("--out", required=True, help="output folder (checkpoint, encoder, metrics log)")
    parser.add_argument("--config", help='JSON file of options overriding the profile, e.g. {"train": {"steps": 500}}')
    parser.add_argument("--profile", choices=PROFILES, default="cpu", help="default configuration (default: cpu)")
    parser.add_argument(
        "--channel-map", choices=sorted(CHANNEL_MAPS), default="cpjump1", help="stain layout of the files"
    )
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--device", help="auto, cpu or cuda")
    parser.add_argument("--num-workers", type=int, help="data-loader worker processes")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoint.pt exists")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> None:
    """Load the config and the fields (into memory, or lazily from a field table), then train."""
    options = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "num_workers": args.num_workers,
    }
    config = load_config(args.config, args.method, args.profile)
    config = apply_overrides(config, {"train": {k: v for k, v in options.items() if v is not None}}, "command line")
    if args.images:
        fields, names = load_fields(args.images, CHANNEL_MAPS[args.channel_map])
    else:
        fields = FieldStore(args.fields_table, CHANNEL_MAPS[args.channel_map])
        names = fields.names
    result = train(config, fields, args.out, names=names, resume=not args.no_resume)
    last = {"step": result.step, "images_per_s": round(result.images_per_s, 2), "last": result.last_metrics}
    print(json.dumps({**last, "out": str(result.out_dir)}))


def torchrun_command(
    method: str, fields_table: str | os.PathLike, out_dir: str | os.PathLike, config_file: str | os.PathLike,
    n_processes: int, resume: bool = True,
) -> list[str]:
    """The command that runs ``cellstudy train`` on a field table in ``n_processes`` processes with ``torchrun``."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_processes}",
        "-m", "cellstudy.cli", "train", method, "--fields-table", str(fields_table), "--out", str(out_dir),
        "--config", str(config_file), *([] if resume else ["--no-resume"]),
    ]  # fmt: skip


def torchrun_train(
    config: ExperimentConfig, fields_table: str | os.PathLike, out_dir: str | os.PathLike, n_processes: int,
    resume: bool = True,
) -> None:
    """Pre-train ``config`` on a field table in ``n_processes`` GPU processes: :func:`torchrun_command` as a subprocess.

    The configuration is written to ``<out_dir>/requested_config.json`` (:data:`REQUESTED_CONFIG`) for the
    command; the model lands in ``out_dir`` as with :func:`cellstudy.train.train`.

    Raises
    ------
    subprocess.CalledProcessError
        The training processes failed (their output went to this process's output).
    """
    config_file = Path(out_dir) / REQUESTED_CONFIG
    config_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(config.to_dict(), indent=2) + "\n", config_file)
    subprocess.run(torchrun_command(config.method, fields_table, out_dir, config_file, n_processes, resume), check=True)


def add_query_parser(subparsers: argparse._SubParsersAction) -> None:
    """``cellstudy query compound|gene NAME``: genes ranked for a compound, or compounds for a gene."""
    parser = subparsers.add_parser(
        "query",
        help="rank genes for a compound, or compounds for a gene, by profile similarity",
        description="Rank the genes whose CRISPR/ORF consensus profiles look most like a compound's (absolute "
        "cosine, sign shown), or the compounds most like a gene's, with p-values against all compound-gene pairs.",
    )
    parser.add_argument("kind", choices=sorted(QUERIES), help="what NAME is")
    parser.add_argument("name", help="compound broad_sample or pert_iname, or gene symbol (any case)")
    parser.add_argument("--profiles", required=True, help="CSV of consensus profiles (Metadata_* columns + features)")
    parser.add_argument("--top", type=int, default=10, help="ranks shown per list (default: 10)")
    parser.add_argument(
        "--modality", nargs="+", choices=query.GENETIC_MODALITIES, default=list(query.GENETIC_MODALITIES),
        help="genetic modalities (default: crispr orf)",
    )
    parser.add_argument("--cell-type", help="only this cell type (default: all)")
    parser.add_argument("--out", help="also write the full ranked table to this CSV")
    parser.set_defaults(func=run_query)


def run_query(args: argparse.Namespace) -> None:
    """Rank, optionally write the full table, and print the top of every list."""
    rank, lists = QUERIES[args.kind]
    results = rank(pd.read_csv(args.profiles), args.name, args.modality, args.cell_type)
    if args.out:
        with atomic_path(args.out) as tmp:
            results.to_csv(tmp, index=False)
    print(query.as_text(results, lists, args.top))


def build_parser() -> argparse.ArgumentParser:
    """The ``cellstudy`` parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="cellstudy", description="Self-supervised ViTs vs CellProfiler on CPJUMP1")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_parser(subparsers)
    add_query_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``cellstudy`` command."""
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
