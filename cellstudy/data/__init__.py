"""The study's inputs: the CPJUMP1 design, images, field tables, downloads and published results.

Modules, in pipeline order:

- :mod:`cellstudy.data.sources`: find, verify and download the study's real data
- :mod:`cellstudy.data.cpjump1`: the CPJUMP1 design as tidy tables
- :mod:`cellstudy.data.images`: read and write 5-channel fields
- :mod:`cellstudy.data.fieldstore`: field tables and their fields read on demand
- :mod:`cellstudy.data.decodedstore`: fields decoded once into memory-mappable files
- :mod:`cellstudy.data.gallery`: downloads from the Cell Painting Gallery
- :mod:`cellstudy.data.published`: the paper's profiles and numbers
"""
