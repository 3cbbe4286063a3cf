"""Classical (CellProfiler-style) features: segmentation and cp-measure per well.

Modules, in pipeline order:

- :mod:`cellstudy.features.segmentation`: nuclei and cells
- :mod:`cellstudy.features.classical`: cp-measure features, median per well
"""
