"""Encoders and self-supervised pre-training methods.

- :mod:`cellstudy.models.vit`: 5-channel and channel-agnostic ViT encoders.
- :mod:`cellstudy.models.mae`: masked autoencoder.
- :mod:`cellstudy.models.dino`: DINO self-distillation.
"""

from cellstudy.models.dino import DINO, DINOConfig
from cellstudy.models.mae import MAE, MAEConfig
from cellstudy.models.vit import (
    ChannelAgnosticViT,
    EncoderConfig,
    ViTEncoder,
    build_encoder,
)

__all__ = [
    "DINO",
    "DINOConfig",
    "MAE",
    "MAEConfig",
    "ChannelAgnosticViT",
    "EncoderConfig",
    "ViTEncoder",
    "build_encoder",
]
