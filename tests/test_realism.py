import numpy as np
import pandas as pd
import pytest

from cellstudy.data.images import DAOY_CHANNELS, LAYOUT, write_field
from cellstudy.simulation import realism


def test_native_scale_multiplies_areas_only():
    objects = pd.DataFrame(
        {"Nuclei_AreaShape_Area": [10.0], "Cells_AreaShape_Area": [40.0], "Cells_Intensity_MeanIntensity_DNA": [0.2]}
    )
    scaled = realism.to_native_scale(objects, binning=2)
    assert scaled.loc[0, "Nuclei_AreaShape_Area"] == 40 and scaled.loc[0, "Cells_AreaShape_Area"] == 160
    assert scaled.loc[0, "Cells_Intensity_MeanIntensity_DNA"] == 0.2


def test_cells_per_native_field_scales_by_area():
    objects = pd.DataFrame({"well": ["A01"] * 10 + ["A02"] * 5, "field": 1})
    counts = realism.cells_per_native_field(objects, image_size=540, binning=1)  # a quarter of a field
    assert counts.to_dict() == {("A01", 1): 40, ("A02", 1): 20}


def test_summary_ratio_of_medians():
    long = pd.DataFrame(
        {"source": ["simulated"] * 3 + ["real"] * 3, "feature": "f", "value": [1.0, 2.0, 3.0, 2.0, 4.0, 6.0]}
    )
    table = realism.summary(long).set_index("feature")
    assert table.loc["f", "ratio_of_medians"] == pytest.approx(0.5)
    assert table.loc["f", "real_50%"] == 4.0


def test_field_objects_measures_planted_cells(tmp_path):
    image = np.full((5, 160, 160), 300, np.uint16)
    yy, xx = np.mgrid[:160, :160]
    for cy, cx in [(40, 40), (115, 110)]:
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 < 30**2
        nucleus = (yy - cy) ** 2 + (xx - cx) ** 2 < 12**2
        image[1:, cell] = 4000
        image[0, nucleus] = 9000
    write_field(tmp_path, "B03", 1, image)
    objects = realism.field_objects(pd.DataFrame({"folder": [str(tmp_path)], "well": ["B03"], "field": [1]}))
    assert len(objects) == 2
    # disks of radius 12 and 30: pi r^2 = 452 and 2827 pixels; the smoothed log-Otsu nuclear
    # threshold sits at the geometric mean of 300 and 9000, about 2 px outside a sharp edge
    assert objects["Nuclei_AreaShape_Area"].between(452, 1.5 * 452).all()
    assert objects["Cells_AreaShape_Area"].between(0.7 * 2827, 1.3 * 2827).all()
    assert set(realism.REALISM_FEATURES) <= set(objects.columns)
    write_field(tmp_path / "daoy", "B03", 1, image, DAOY_CHANNELS)  # the same field in another channel layout
    daoy = pd.DataFrame({"folder": [str(tmp_path / "daoy")], "well": ["B03"], "field": [1], LAYOUT: ["daoy"]})
    pd.testing.assert_frame_equal(realism.field_objects(daoy), objects)
