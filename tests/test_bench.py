"""Tests for the benchmarks of ``make bench`` (tools/bench.py) that can run at a small size."""

from __future__ import annotations

import io
import os
from pathlib import Path

import bench
import pytest

METADATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cpjump1" / "metadata"
needs_shared = pytest.mark.skipif(not (METADATA / "experiment-metadata.tsv").is_file(), reason="shared data absent")


@needs_shared
@pytest.mark.filterwarnings("ignore::UserWarning")  # a 10% sample of the design leaves some groups without pairs
def test_scale_benchmark_runs_on_the_real_design():
    timings = bench.scale_benchmark(n_wells=1500, n_features=16, null_size=200)
    assert set(timings) == {"replicate_s", "consensus_s", "sister_s", "compound_gene_s", "total_s", "peak_rss_gb"}
    assert all(value > 0 for value in timings.values())


def test_progress_bars_only_when_every_stream_is_a_terminal(tmp_path):
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, open(tmp_path / "log.txt", "w") as log:
        assert bench.show_progress(terminal) and bench.show_progress(terminal, terminal)
        assert not bench.show_progress(io.StringIO()) and not bench.show_progress(log)
        assert not bench.show_progress(terminal, log) and not bench.show_progress(terminal, None)
    os.close(leader)


REAL_FIELDS = METADATA.parent / "images"
needs_real_fields = pytest.mark.skipif(not REAL_FIELDS.is_dir(), reason="real sample fields absent")


@needs_real_fields
def test_store_benchmarks_run_at_a_tiny_size():
    samples = {"mae": (2, 1), "dino": (1, 1)}
    plate = bench.bench_store_plate(n_fields=3, decoded=1, samples=samples)
    real = bench.bench_store_real(samples=samples)
    for results in (plate, real):
        assert results["store MB per field"] == pytest.approx(5 * 1080 * 1080 * 2 / 1e6, rel=1e-3)
        rates = [value for metric, value in results.items() if "/s" in metric and isinstance(value, float)]
        assert len(rates) == 6 and all(rate > 0 for rate in rates)
        verdicts = [results[f"{method} >= {target:g}/s per core"] for method, target in bench.STORE_TARGETS.items()]
        assert all(value == "met" or value.startswith("MISSED by") for value in verdicts)
    assert plate["fields"] == 3.0 and real["fields"] == 10.0


@needs_real_fields
@needs_shared
def test_label_efficiency_tile_memory_runs_at_a_tiny_size():
    results = bench.bench_label_efficiency_tiles(n_fields=2)
    assert results["fields"] == 2.0 and 2.0 <= results["tiles"] <= 8.0
    assert results["float32 bytes per tile"] == 5 * 224 * 224 * 4
    assert results["held bytes per tile"] == 3 * 8  # a field row and a corner, int64
    assert results["build peak MB"] < results["float32 build peak MB"]
    assert results["full tiles"] == 4 * results["full CRISPR fields"] > 0
    assert results["full float32 GB"] == pytest.approx(results["full tiles"] * 5 * 224 * 224 * 4 / 1e9)
