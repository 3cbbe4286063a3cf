"""Self-supervised pre-training: crops and the one training loop for MAE and DINO.

Modules, in pipeline order:

- :mod:`cellstudy.training.crops`: sampling, augmentation, normalisation
- :mod:`cellstudy.training.train`: the training loop, presets, checkpoints
"""
