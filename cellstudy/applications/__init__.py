"""What the profiles are for, and the claims they test.

Modules, in pipeline order:

- :mod:`cellstudy.applications.query`: compound -> genes, gene -> compounds
- :mod:`cellstudy.applications.interpret`: MAE reconstructions and attention
- :mod:`cellstudy.applications.label_efficiency`: accuracy against labelled wells
- :mod:`cellstudy.applications.mask_sweep`: MAE mask ratio at equal compute
- :mod:`cellstudy.applications.claims`: verdict rules of the claims summary
"""
