"""The study layer the notebooks call: run sizes, the study object, figures.

Modules:

- :mod:`cellstudy.study.runsize`: the run sizes ``quick``, ``default`` and ``full``, every size knob in one place.
- :mod:`cellstudy.study.study`: :class:`Study`, what a notebook makes from its parameters: folders, settings,
  the data label, atomic saving of tables and figures.
- :mod:`cellstudy.study.plots`: figures saved with their source data.
"""

from cellstudy.study.study import Study

__all__ = ["Study"]
