"""Tests for tools/compare_builds.py: identical builds pass, any other difference is named, run times aside."""

import compare_builds


def build(root, summary="a,b\n1,2\n", timings="seconds\n3.5\n", overview="method,seconds,wells\ndino,1.0,10\n"):
    (root / "results" / "06_evaluation").mkdir(parents=True)
    (root / "results" / "02_simulated_benchmark").mkdir(parents=True)
    (root / "results" / "05_embedding").mkdir(parents=True)
    (root / "figures").mkdir(parents=True)
    (root / "results" / "06_evaluation" / "summary.csv").write_text(summary)
    (root / "results" / "02_simulated_benchmark" / "timings.csv").write_text(timings)
    (root / "results" / "05_embedding" / "profiles_overview.csv").write_text(overview)
    (root / "figures" / "06_evaluation_methods.csv").write_text(summary)
    return root


def test_run_times_aside_identical_builds_pass(tmp_path):
    old = build(tmp_path / "old")
    new = build(tmp_path / "new", timings="seconds\n9.9\n", overview="method,seconds,wells\ndino,7.0,10\n")
    assert compare_builds.compare(old, new) == []
    assert compare_builds.main([str(old), str(new)]) == 0


def test_a_changed_number_or_a_missing_file_is_named(tmp_path):
    old = build(tmp_path / "old")
    new = build(tmp_path / "new", summary="a,b\n1,3\n", overview="method,seconds,wells\ndino,1.0,11\n")
    (new / "figures" / "06_evaluation_methods.csv").unlink()
    problems = compare_builds.compare(old, new)
    assert any("differs: results/06_evaluation/summary.csv (line 2: '1,2' -> '1,3')" in p for p in problems)
    assert any("profiles_overview.csv" in p for p in problems)
    assert any(p.startswith("only in") and "06_evaluation_methods.csv" in p for p in problems)
    assert compare_builds.main([str(old), str(new)]) == 1
