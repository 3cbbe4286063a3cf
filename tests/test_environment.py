"""Tests for cellstudy.study.environment: versions come from the installed distributions."""

from importlib import metadata

import numpy as np

from cellstudy.study import environment


def test_versions_are_those_installed_and_absent_packages_are_named():
    table = environment.versions(("numpy", "no-such-package-xyz")).set_index("package")["version"]
    assert table["numpy"] == metadata.version("numpy") == np.__version__
    assert table["no-such-package-xyz"] == "not installed"
    assert table.index[0] == "python"


def test_run_times_read_papermills_record(tmp_path):
    import json

    record = {
        "metadata": {
            "papermill": {
                "parameters": {"run_size": "quick"},
                "duration": 90.0,
                "end_time": "2026-01-01T00:00:00",
                "exception": None,
            }
        }
    }
    for name in ("01_a", "02_b"):
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(record))
    (tmp_path / "notes.ipynb").write_text("{}")  # not a numbered notebook
    table = environment.run_times(tmp_path, skip="02_b")
    assert table.to_dict("records") == [
        {"notebook": "01_a", "run_size": "quick", "minutes": 1.5, "finished": "2026-01-01T00:00:00", "failed": False}
    ]
