"""Command-line interface: ``cellstudy <subcommand> ...``.

Each subcommand is one ``add_<name>_parser`` function (its options) and one
``run_<name>`` function (what it does); :func:`build_parser` collects them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from cellstudy.applications import query
from cellstudy.data.fieldstore import FieldStore, read_field_table
from cellstudy.data.images import CHANNEL_LAYOUTS, with_layout
from cellstudy.files import atomic_path
from cellstudy.training.crops import load_fields
from cellstudy.training.train import (
    METHODS,
    PRESETS,
    apply_overrides,
    load_config,
    train,
)

QUERIES = {"compound": (query.rank_genes, query.GENE_LIST), "gene": (query.rank_compounds, query.COMPOUND_LIST)}
"""``cellstudy query KIND``: the ranking function and the columns that identify one of its lists."""
USER_ERRORS = (OSError, ValueError, KeyError)
"""What a mistake in the arguments or the input files raises (a missing, unreadable or wrong file, an unknown
name, a bad option): reported by :func:`main` in one line. Anything else is a bug and keeps its traceback."""


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """``cellstudy train mae|dino``: self-supervised pre-training of a ViT encoder."""
    parser = subparsers.add_parser(
        "train",
        help="pre-train a ViT encoder with MAE or DINO",
        description="Pre-train a ViT on random crops of 5-channel fields; resumes from OUT/checkpoint.pt. "
        "For several GPUs: torchrun --nproc_per_node N -m cellstudy.cli train mae "
        "--fields-table build/gallery/fields.csv --preset gpu-vit-s16-224 --out build/models/mae",
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
    parser.add_argument("--config", help='JSON file of options overriding the preset, e.g. {"train": {"steps": 500}}')
    parser.add_argument(
        "--preset", choices=PRESETS, default="cpu", help="training preset the options start from (default: cpu)"
    )
    parser.add_argument(
        "--channel-map",
        choices=sorted(CHANNEL_LAYOUTS),
        default="cpjump1",
        help="channel layout of the files (default: cpjump1); a field table's channel_layout column, "
        "where it names one, takes precedence",
    )
    parser.add_argument("--steps", type=int, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--device", help="auto, cpu or cuda")
    parser.add_argument("--num-workers", type=int, help="data-loader worker processes")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoint.pt exists")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> None:
    """Load the config and the fields (into memory, or lazily from a field table), then train.

    ``--channel-map`` is the layout of the listed fields (``--images``) or of the table's rows that name none.
    """
    options = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "num_workers": args.num_workers,
    }
    config = load_config(args.config, args.method, args.preset)
    config = apply_overrides(config, {"train": {k: v for k, v in options.items() if v is not None}}, "command line")
    if args.images:
        fields, names = load_fields(args.images, args.channel_map)
    else:
        fields = FieldStore(with_layout(read_field_table(args.fields_table), args.channel_map))
        names = fields.names
    result = train(config, fields, args.out, names=names, resume=not args.no_resume)
    last = {"step": result.step, "images_per_s": round(result.images_per_s, 2), "last": result.last_metrics}
    print(json.dumps({**last, "out": str(result.out_dir)}))


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
        "--modality",
        nargs="+",
        choices=query.GENETIC_MODALITIES,
        default=list(query.GENETIC_MODALITIES),
        help="genetic modalities (default: crispr orf)",
    )
    parser.add_argument("--cell-type", help="only this cell type (default: all)")
    parser.add_argument("--out", help="also write the full ranked table to this CSV")
    parser.set_defaults(func=run_query)


def run_query(args: argparse.Namespace) -> None:
    """Rank, optionally write the full table, and print the top of every list."""
    rank, lists = QUERIES[args.kind]
    results = rank(query.read_profiles(args.profiles), args.name, args.modality, args.cell_type)
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


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line: an OS error as ``reason: file``, a KeyError without its quotes."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        message = f"{error.strerror}: {error.filename}"
    elif isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    else:
        message = str(error)
    return " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``cellstudy`` command.

    A mistake in the arguments or the input files (:data:`USER_ERRORS`) ends as
    argparse's own errors do: one line ``cellstudy: error: ...`` on stderr and
    exit status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as error:
        parser.exit(2, f"{parser.prog}: error: {_one_line(error)}\n")


if __name__ == "__main__":
    main()
