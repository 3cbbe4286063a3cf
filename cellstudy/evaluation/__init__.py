"""Scoring profiles: the paper's retrieval tasks, method comparisons, the encoders' kNN check.

Modules, in pipeline order:

- :mod:`cellstudy.evaluation.retrieval`: the three CPJUMP1 tasks (mAP, fraction retrieved)
- :mod:`cellstudy.evaluation.compare`: intervals and paired tests
- :mod:`cellstudy.evaluation.probe`: k-nearest-neighbour check of an encoder
"""
