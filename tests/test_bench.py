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
