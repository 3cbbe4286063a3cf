"""Vision-transformer encoders for 5-channel Cell Painting crops.

Both encoders are timm's :class:`~timm.models.vision_transformer.VisionTransformer`
with the same blocks; they differ only in how an image becomes tokens:

``ViTEncoder``
    The standard ViT with ``in_chans=5``: one token per ``patch x patch`` square,
    its projection sees all five stains at once.
``ChannelAgnosticViT``
    In the spirit of Kraus et al. 2024 (channel-agnostic MAE): one *shared*
    single-channel patch projection applied to every channel separately, plus a
    learned embedding per channel, so a field gives ``channels x patches``
    tokens. Five times the tokens (and roughly 5-25x the attention cost) for an
    encoder that treats stains as a set of images rather than colour planes.

Every encoder exposes the pieces the pre-training methods and the embedding
stage need: :meth:`~ViTEncoder.embed` (tokens with position/channel
embeddings, no class token), :meth:`~ViTEncoder.encode` (class token, blocks,
final norm; MAE calls it on the visible tokens only),
:meth:`~ViTEncoder.patchify` / :meth:`~ViTEncoder.unpatchify` (pixel targets
in token order) and :meth:`~ViTEncoder.pooled_features` (class token and mean
patch token). Crops of any size divisible by the patch size are accepted; the
position embedding, learned for ``img_size``, is resampled (bicubic) to other
grids, as DINO's local crops need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
"""ViT sizes: name -> (embedding width, depth, attention heads), as in DeiT / timm."""


@dataclass
class EncoderConfig:
    """Architecture of the ViT encoder.

    Attributes
    ----------
    size
        Width and head count from :data:`SIZES` (``tiny`` 192-d, ``small`` 384-d,
        ``base`` 768-d). ``tiny`` is the CPU default; ``small`` is the usual
        choice on one GPU; ``base`` needs far more data than the sample fields.
    depth
        Number of transformer blocks; ``None`` keeps the size's standard 12. The
        CPU preset uses 6 to halve the cost; use 12 when comparing with
        published ViT-S/B numbers.
    patch_size
        Side of a square patch in pixels. 16 is standard at 224 px; at native
        Cell Painting resolution (about 0.6 um/px) 8 px is roughly a nucleolus,
        and small crops need small patches to give enough tokens (64 px / 8 =
        64 tokens). Cost grows with (crop / patch)^2.
    img_size
        Crop side the learned position embedding is laid out for; other crop
        sizes (divisible by ``patch_size``) get a resampled embedding. Set it
        to the global (MAE: only) crop size.
    in_chans
        Number of stains per image (5 for Cell Painting).
    channel_agnostic
        Use :class:`ChannelAgnosticViT` (one shared single-channel patch
        projection, channel embeddings) instead of the standard 5-channel patch
        projection.
    drop_path_rate
        Stochastic-depth rate (DINO uses 0.1 for ViT-S). Leave 0 for short runs
        and small models, where it only slows learning.
    """

    size: str = "tiny"
    depth: int | None = 6
    patch_size: int = 8
    img_size: int = 64
    in_chans: int = 5
    channel_agnostic: bool = False
    drop_path_rate: float = 0.0


class ViTEncoder(VisionTransformer):
    """timm ViT (class token, learned position embedding) with the hooks MAE and DINO need.

    Built from an :class:`EncoderConfig` (both encoder classes are; :func:`build_encoder`
    picks the class from ``config.channel_agnostic``). ``encoder(x)`` returns the
    class-token embedding ``(B, D)``; :meth:`forward_features` returns all tokens
    ``(B, 1 + L, D)`` after the final norm.
    """

    single_channel_patches: ClassVar[bool] = False
    """Whether the patch projection sees one channel at a time (:class:`ChannelAgnosticViT`)."""

    def __init__(self, config: EncoderConfig) -> None:
        if config.size not in SIZES:
            raise ValueError(f"unknown encoder size {config.size!r}; choose one of {sorted(SIZES)}")
        embed_dim, depth, num_heads = SIZES[config.size]
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=1 if self.single_channel_patches else config.in_chans,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=config.depth or depth,
            num_heads=num_heads,
            drop_path_rate=config.drop_path_rate,
        )
        self.patch_embed.strict_img_size = False
        self.num_channels = config.in_chans

    @property
    def patch_size(self) -> int:
        """Side of a patch in pixels."""
        return self.patch_embed.patch_size[0]

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patches per column and per row of a ``height x width`` crop."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"crop of {height}x{width} px is not divisible by the patch size {p}")
        return height // p, width // p

    def num_tokens(self, height: int, width: int) -> int:
        """Number of patch tokens (no class token) of a ``height x width`` crop."""
        rows, cols = self.patch_grid(height, width)
        return rows * cols

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding of the patch tokens ``(1, rows * cols, D)``, resampled to ``grid``."""
        return resample_abs_pos_embed(
            self.pos_embed[:, 1:], new_size=list(grid), old_size=list(self.patch_embed.grid_size), num_prefix_tokens=0
        )

    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        """Patch tokens with position embeddings, ``(B, L, D)``, in :meth:`patchify` order."""
        self._check_channels(imgs)
        grid = self.patch_grid(*imgs.shape[-2:])
        return self.patch_embed(imgs) + self.position_embedding(grid)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the class token, run the blocks and the final norm: ``(B, L, D) -> (B, 1 + L, D)``."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = self.norm_pre(torch.cat([cls, tokens], dim=1))
        return self.norm(self.blocks(x))

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """All output tokens ``(B, 1 + L, D)``: class token first, then patches."""
        return self.encode(self.embed(imgs))

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """Class-token embedding ``(B, D)``."""
        return self.forward_head(self.forward_features(imgs))

    def pooled_features(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class token and mean of the patch tokens, each ``(B, D)``: the embedding stage's features."""
        tokens = self.forward_features(imgs)
        return tokens[:, 0], tokens[:, 1:].mean(dim=1)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """Pixels of each token: ``(B, C, H, W) -> (B, L, p * p * C)``, pixel-major, channel-minor."""
        blocks = self._blocks(imgs)  # (B, C, rows, p, cols, p)
        b, c, rows, p, cols, _ = blocks.shape
        return blocks.permute(0, 2, 4, 3, 5, 1).reshape(b, rows * cols, p * p * c)

    def unpatchify(self, patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`patchify` for a ``height x width`` crop."""
        (rows, cols), p, c = self.patch_grid(height, width), self.patch_size, self.num_channels
        blocks = patches.reshape(-1, rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return blocks.reshape(-1, c, height, width)

    def _blocks(self, imgs: torch.Tensor) -> torch.Tensor:
        """View ``(B, C, H, W)`` as ``(B, C, rows, p, cols, p)``."""
        self._check_channels(imgs)
        (rows, cols), p = self.patch_grid(*imgs.shape[-2:]), self.patch_size
        return imgs.reshape(imgs.shape[0], imgs.shape[1], rows, p, cols, p)

    def _check_channels(self, imgs: torch.Tensor) -> None:
        if imgs.ndim != 4 or imgs.shape[1] != self.num_channels:
            raise ValueError(f"expected images of shape (B, {self.num_channels}, H, W), got {tuple(imgs.shape)}")


class ChannelAgnosticViT(ViTEncoder):
    """ViT whose tokens are single-channel patches (Kraus et al. 2024).

    One patch projection (``in_chans=1``) is shared by all channels; every token
    gets the position embedding of its patch plus the learned embedding of its
    channel. Tokens are ordered channel-major: ``L = C * rows * cols``. With
    equal channel embeddings the class token is invariant to the channel order;
    with learned (different) ones it is not.
    """

    single_channel_patches = True

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__(config)
        self.channel_embed = nn.Parameter(trunc_normal_(torch.empty(1, config.in_chans, 1, self.embed_dim), std=0.02))

    def num_tokens(self, height: int, width: int) -> int:
        """Number of tokens (no class token): one per channel and patch."""
        return self.num_channels * super().num_tokens(height, width)

    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, C * rows * cols, D)`` with position and channel embeddings, channel-major."""
        self._check_channels(imgs)
        b, c, height, width = imgs.shape
        grid = self.patch_grid(height, width)
        tokens = self.patch_embed(imgs.reshape(b * c, 1, height, width)) + self.position_embedding(grid)
        tokens = tokens.reshape(b, c, grid[0] * grid[1], -1) + self.channel_embed
        return tokens.flatten(1, 2)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """Pixels of each token: ``(B, C, H, W) -> (B, C * rows * cols, p * p)``."""
        blocks = self._blocks(imgs)
        b, c, rows, p, cols, _ = blocks.shape
        return blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c * rows * cols, p * p)

    def unpatchify(self, patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Inverse of :meth:`patchify` for a ``height x width`` crop."""
        (rows, cols), p, c = self.patch_grid(height, width), self.patch_size, self.num_channels
        blocks = patches.reshape(-1, c, rows, cols, p, p).permute(0, 1, 2, 4, 3, 5)
        return blocks.reshape(-1, c, height, width)


def build_encoder(config: EncoderConfig) -> ViTEncoder:
    """The encoder described by ``config`` (fresh random weights)."""
    return (ChannelAgnosticViT if config.channel_agnostic else ViTEncoder)(config)
