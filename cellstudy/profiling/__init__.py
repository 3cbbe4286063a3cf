"""Morphological profiles: embedding fields into well profiles, and their post-processing.

Modules, in pipeline order:

- :mod:`cellstudy.profiling.embed`: fields -> tiles -> features -> well profiles
- :mod:`cellstudy.profiling.profiles`: post-processing and consensus profiles
"""
