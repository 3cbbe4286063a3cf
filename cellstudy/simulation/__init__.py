"""The simulated CPJUMP1 screen: latent phenotypes, rendered fields, planted truth.

Modules, in pipeline order:

- :mod:`cellstudy.simulation.phenotypes`: latent phenotypes with planted ground truth
- :mod:`cellstudy.simulation.simulate`: render the screen
- :mod:`cellstudy.simulation.planted`: the ceiling the planted biology sets
- :mod:`cellstudy.simulation.realism`: simulated vs real measurements
"""
