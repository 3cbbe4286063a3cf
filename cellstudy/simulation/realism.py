"""Do simulated fields measure like real ones? Classical measurements of control fields side by side.

Simulated pixels are ``binning`` native CPJUMP1 pixels wide, so areas are rescaled to native pixels
and cell counts to a native 1080 × 1080 field before they are compared with the real field.
"""

from __future__ import annotations

import pandas as pd

from cellstudy.data.images import CHANNELS, field_channel_maps, read_field
from cellstudy.features.classical import measure_field

NATIVE_FIELD = 1080
"""Edge of a real CPJUMP1 field of view, in native pixels."""
AREA_FEATURES = ("Nuclei_AreaShape_Area", "Cells_AreaShape_Area")
INTENSITY_FEATURES = tuple(f"Cells_Intensity_MeanIntensity_{channel}" for channel in CHANNELS)
TEXTURE_FEATURES = tuple(f"Cells_Texture_Contrast_{channel}_3_00_256" for channel in CHANNELS)
REALISM_FEATURES = (*AREA_FEATURES, *INTENSITY_FEATURES, *TEXTURE_FEATURES)
"""Features compared: size, mean intensity per channel, Haralick contrast per channel (scale 3 px,
which spans a coarser physical scale in binned simulated fields: compare shapes, not exact values)."""


def field_objects(fields: pd.DataFrame) -> pd.DataFrame:
    """Per-cell classical measurements of every field of a field table (``folder``, ``well``, ``field``).

    Each field is read in its channel layout (:func:`cellstudy.data.images.field_channel_maps`).
    """
    tables = []
    for row, channel_map in zip(fields.itertuples(), field_channel_maps(fields)):
        objects = measure_field(read_field(row.folder, row.well, row.field, channel_map))
        tables.append(objects.reset_index().assign(well=row.well, field=row.field))
    return pd.concat(tables, ignore_index=True)


def to_native_scale(objects: pd.DataFrame, binning: float) -> pd.DataFrame:
    """``objects`` with area features in native pixels (× ``binning``²)."""
    return objects.assign(**{feature: objects[feature] * binning**2 for feature in AREA_FEATURES})


def cells_per_native_field(objects: pd.DataFrame, image_size: int, binning: float) -> pd.Series:
    """Cells per field, scaled to the area of a native 1080 × 1080 field."""
    per_field = objects.groupby(["well", "field"]).size()
    return per_field * (NATIVE_FIELD / (image_size * binning)) ** 2


def compare(simulated: pd.DataFrame, real: pd.DataFrame, features: tuple[str, ...] = REALISM_FEATURES) -> pd.DataFrame:
    """Long table (``source``, ``feature``, ``value``) of per-cell ``features`` of both sources."""
    tables = [
        frame[list(features)].melt(var_name="feature").assign(source=source)
        for source, frame in (("simulated", simulated), ("real", real))
    ]
    return pd.concat(tables, ignore_index=True)[["source", "feature", "value"]]


def summary(long_table: pd.DataFrame) -> pd.DataFrame:
    """Median and interquartile range of each feature per source, and the simulated/real ratio of medians."""
    stats = long_table.groupby(["feature", "source"])["value"].describe(percentiles=[0.25, 0.5, 0.75])
    table = stats[["25%", "50%", "75%"]].unstack("source")
    table.columns = [f"{source}_{stat}" for stat, source in table.columns]
    table["ratio_of_medians"] = table["simulated_50%"] / table["real_50%"]
    return table.reset_index()
