"""Small random well-profile screens shared by the evaluation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def compound_screen(seed: int, n_plates: int = 4, n_samples: int = 8, n_negcon: int = 20, n_features: int = 5):
    """Random well profiles of ``n_samples`` compounds once per plate, with ``n_negcon`` controls per plate;
    compounds s0 and s1 are retrievable (shifted by 4 along their own feature), the others are noise.
    Targets ``G0``-``G2`` cycle over the compounds.
    """
    rng = np.random.default_rng(seed)
    rows = [
        {
            "Metadata_Plate": f"P{p}",
            "Metadata_Well": f"W{i:03d}",
            "Metadata_broad_sample": sample,
            "Metadata_negcon": sample == "DMSO",
            "Metadata_target_list": None if sample == "DMSO" else f"G{i % 3}",
        }
        for p in range(n_plates)
        for i, sample in enumerate([f"s{i}" for i in range(n_samples)] + ["DMSO"] * n_negcon)
    ]
    metadata = pd.DataFrame(rows).assign(Metadata_cell_type="U2OS", Metadata_modality="compound", Metadata_timepoint=48)
    values = rng.normal(size=(len(rows), n_features))
    for column, sample in enumerate(("s0", "s1")):
        values[(metadata["Metadata_broad_sample"] == sample).to_numpy(), column] += 4
    return pd.concat([metadata, pd.DataFrame(values, columns=[f"f{i}" for i in range(n_features)])], axis=1)
