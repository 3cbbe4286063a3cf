"""Compare the result files of two builds of the study, file by file (run times aside).

Run as ``python tools/compare_builds.py OLD_BUILD NEW_BUILD``: every CSV under ``results/`` and beside every
figure in ``figures/`` of either build must be in both, byte for byte the same, except the columns that
hold run times (:data:`TIMING_COLUMNS`). Prints one line per file that differs and a count; exits 1 if any does.
A refactor proves itself with it: ``make reproduce`` before and after, then this.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pandas as pd

TIMING_COLUMNS = {
    "results/02_simulated_benchmark/timings.csv": None,  # the whole file is run times
    "results/05_embedding/profiles_overview.csv": ["seconds"],
    "results/07_applications/timings.csv": None,
    "results/08_summary/run_times.csv": None,
    "results/08_summary/environment.csv": None,  # written by the new build only: the software it used
}
"""Files (relative to the build) whose listed columns are run times; ``None``: the whole file."""


def result_files(build: Path) -> set[str]:
    """The CSVs of a build's results and figures, relative to the build."""
    paths = [*build.glob("results/**/*.csv"), *build.glob("figures/*.csv")]
    return {str(path.relative_to(build)) for path in paths}


def without_timings(path: Path, columns: list[str]) -> bytes:
    """The CSV at ``path`` with ``columns`` dropped, written back as text."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    buffer = io.StringIO()
    table.drop(columns=[c for c in columns if c in table.columns]).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def same(old: Path, new: Path, relative: str) -> bool:
    """Whether a result file is the same in both builds, run times aside."""
    if relative in TIMING_COLUMNS:
        columns = TIMING_COLUMNS[relative]
        return columns is None or without_timings(old, columns) == without_timings(new, columns)
    return old.read_bytes() == new.read_bytes()


def first_difference(old: Path, new: Path) -> str:
    """The first line where two text files differ, for the report."""
    old_lines, new_lines = old.read_text().splitlines(), new.read_text().splitlines()
    for number, (a, b) in enumerate(zip(old_lines, new_lines), start=1):
        if a != b:
            return f"line {number}: {a[:100]!r} -> {b[:100]!r}"
    return f"{len(old_lines)} lines -> {len(new_lines)} lines"


def compare(old_build: Path, new_build: Path) -> list[str]:
    """One line per result file that is missing from a build or differs between them."""
    old_files, new_files = result_files(old_build), result_files(new_build)
    problems = [f"only in {old_build}: {f}" for f in sorted(old_files - new_files) if f not in TIMING_COLUMNS]
    problems += [f"only in {new_build}: {f}" for f in sorted(new_files - old_files) if f not in TIMING_COLUMNS]
    for relative in sorted(old_files & new_files):
        old, new = old_build / relative, new_build / relative
        if not same(old, new, relative):
            problems.append(f"differs: {relative} ({first_difference(old, new)})")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print the differences between two builds; 0 if none."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_build", type=Path)
    parser.add_argument("new_build", type=Path)
    args = parser.parse_args(argv)
    problems = compare(args.old_build, args.new_build)
    print("\n".join(problems))
    checked = len(result_files(args.old_build) & result_files(args.new_build))
    print(f"{checked} result files in both builds; {len(problems)} missing or different")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
