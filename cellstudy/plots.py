"""Figures of the study, and saving each one with its source data beside it.

Following the CPJUMP1 paper repository, a figure is named after the notebook that makes it
(``01_data_exploration_plate_layouts.png``) and its source data is saved as a CSV of the same name.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from cellstudy.files import atomic_path
from cellstudy.images import CHANNELS, composite_rgb, rescale_percentile

PLATE_ROWS, PLATE_COLS = 16, 24


def save_figure(fig: plt.Figure, name: str, data: pd.DataFrame | None, figures_dir: str | Path) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` and its source ``data`` as ``<name>.csv``.

    ``name`` should start with the notebook's name, e.g. ``01_data_exploration_intensities``.
    """
    png = Path(figures_dir) / f"{name}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    if data is not None:
        with atomic_path(png.with_suffix(".csv")) as tmp:
            data.to_csv(tmp, index=False)
    return png


def plate_grid(wells: pd.DataFrame, value: str) -> pd.DataFrame:
    """A 16 × 24 grid (rows A–P, columns 1–24) of ``wells[value]`` from ``Metadata_row``/``Metadata_col``."""
    grid = wells.pivot_table(index="Metadata_row", columns="Metadata_col", values=value, aggfunc="first")
    grid = grid.reindex(index=range(1, PLATE_ROWS + 1), columns=range(1, PLATE_COLS + 1))
    grid.index = [chr(ord("A") + r - 1) for r in grid.index]
    return grid


def plot_plate_layout(ax: plt.Axes, wells: pd.DataFrame, category: str, title: str,
                      palette: dict[str, str]) -> None:
    """Draw one 384-well plate map, each well coloured by its ``category`` (e.g. control type)."""
    levels = list(palette)
    codes = wells[category].map({level: i for i, level in enumerate(levels)})
    grid = plate_grid(wells.assign(_code=codes), "_code")
    ax.imshow(grid.to_numpy(dtype=float), cmap=ListedColormap([palette[level] for level in levels]),
              vmin=-0.5, vmax=len(levels) - 0.5, interpolation="nearest")
    ax.set_xticks(range(0, PLATE_COLS, 4), [str(c) for c in range(1, PLATE_COLS + 1, 4)], fontsize=7)
    ax.set_yticks(range(0, PLATE_ROWS, 3), grid.index[::3], fontsize=7)
    ax.set_title(title, fontsize=9)


def plot_channels(image: np.ndarray, title: str = "", axes_size: float = 2.6) -> plt.Figure:
    """One field: each of the five channels in grey (named) and the colour composite."""
    fig, axes = plt.subplots(1, len(CHANNELS) + 1, figsize=(axes_size * (len(CHANNELS) + 1), axes_size))
    for ax, name, channel in zip(axes, CHANNELS, image):
        ax.imshow(rescale_percentile(channel), cmap="gray")
        ax.set_title(name, fontsize=10)
    axes[-1].imshow(composite_rgb(image))
    axes[-1].set_title("composite", fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
