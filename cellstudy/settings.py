"""Run profiles of the study: what each notebook does at ``quick``, ``default`` and ``full`` size.

- ``quick``: a smoke run of every notebook in a few minutes (the notebook tests use it).
- ``default``: the study as published in the book, sized for a 2-core laptop.
- ``full``: the full CPJUMP1 data on GPUs.

Notebooks take ``profile`` as a papermill parameter and ask this module for their settings, so the
book's methods chapter can report exactly the settings that were used.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cellstudy import simulate

PROFILES = ("quick", "default", "full")


def check_profile(profile: str) -> str:
    """``profile`` itself, or a ``ValueError`` listing the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    return profile


def simulation_config(profile: str, metadata_folder: str | None = None) -> simulate.SimulationConfig:
    """The simulated CPJUMP1 screen of a profile (``full`` uses real images, so it simulates the default)."""
    config = simulate.QUICK_CONFIG if check_profile(profile) == "quick" else simulate.SimulationConfig()
    return replace(config, metadata_folder=metadata_folder)


def simulation_dir(build_dir: str | Path) -> Path:
    """Where the simulated screen of a build lives (written by the simulated-benchmark notebook)."""
    return Path(build_dir) / "simulated"
