"""Masked autoencoder (He et al. 2022) for 5-channel crops.

A random ``mask_ratio`` of the tokens is hidden; the encoder runs on the
visible tokens only (that is where MAE's speed comes from), a light decoder
fills in mask tokens and predicts the pixels of every token, and the loss is
the mean squared error on the masked tokens, against targets normalised per
patch (mean 0, variance 1 within each patch). After pre-training the decoder
is dropped: :meth:`MAE.export_encoder` returns the encoder alone.

The same code trains the standard and the channel-agnostic encoder: tokens,
pixel targets and their order come from the encoder's ``embed`` / ``patchify``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from cellstudy.models.vit import ViTEncoder


@dataclass
class MAEConfig:
    """MAE hyper-parameters (optimiser settings live in the training config).

    Attributes
    ----------
    mask_ratio
        Fraction of tokens hidden from the encoder (0.75 in He et al.; the study's
        claim C2 sweeps it). Higher is cheaper per step and makes the task harder.
    decoder_dim
        Decoder width. He et al. use 512 for ViT-B/L; keep it at or below the
        encoder width for small encoders (128 for ViT-tiny).
    decoder_depth
        Decoder blocks (8 in He et al.). A deep decoder lets the encoder stay more
        abstract (better linear probes); 1-2 suffice for fine-tuning and small runs.
    decoder_heads
        Attention heads of the decoder; ``decoder_dim`` must be divisible by it.
    norm_pix_loss
        Normalise each target patch to mean 0, variance 1 (He et al.: better
        representations). Turn off only to get reconstructions in image units.
    """

    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """Tokens the encoder sees: ``round(num_tokens * (1 - mask_ratio))``, at least one."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, round(num_tokens * (1.0 - mask_ratio)))


def random_masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose the visible tokens: those with the smallest ``noise``.

    Parameters
    ----------
    noise
        ``(B, L)`` random numbers, one per token.
    mask_ratio
        Fraction of tokens to hide.

    Returns
    -------
    ids_keep
        ``(B, K)`` indices of the visible tokens, ``K = num_visible(L, mask_ratio)``.
    ids_restore
        ``(B, L)`` inverse permutation: gathering ``[visible, masked]`` tokens with it
        restores the original order.
    mask
        ``(B, L)`` float, 1 for hidden tokens and 0 for visible ones, in original order.
    """
    batch, length = noise.shape
    keep = num_visible(length, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    mask = torch.ones(batch, length, device=noise.device)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore)


def masking_noise(seeds: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Per-sample masking noise ``(B, num_tokens)`` drawn from a generator seeded by each sample's seed.

    Tying the mask to the sample (not to the process's random state) makes a
    step independent of how the batch is split over processes, and resumable.
    """
    rows = [torch.rand(num_tokens, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds.tolist()]
    return torch.stack(rows)


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``tokens[b, ids[b, k]]`` for ``(B, L, D)`` tokens and ``(B, K)`` indices."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def masked_patch_loss(
    target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = True
) -> torch.Tensor:
    """Mean over hidden tokens of the per-token mean squared error.

    With ``norm_pix_loss`` each target patch is standardised by its own mean and
    (unbiased) variance, plus 1e-6, as in He et al.
    """
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_token = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    return (per_token * mask).sum() / mask.sum()


class MAE(nn.Module):
    """Encoder plus light decoder, trained to reconstruct masked patches.

    Parameters
    ----------
    encoder
        The ViT to pre-train (kept as ``self.encoder``).
    config
        MAE hyper-parameters.
    img_size
        Side of the (square) training crops; fixes the decoder's position embedding.
    """

    def __init__(self, encoder: ViTEncoder, config: MAEConfig, img_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.img_size = img_size
        num_tokens = encoder.num_tokens(img_size, img_size)
        patch_dim = encoder.patchify(torch.zeros(1, encoder.num_channels, img_size, img_size)).shape[-1]
        self.decoder_embed = nn.Linear(encoder.embed_dim, config.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + num_tokens, config.decoder_dim))
        self.decoder_blocks = nn.Sequential(
            *(
                Block(config.decoder_dim, config.decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                for _ in range(config.decoder_depth)
            )
        )
        self.decoder_norm = nn.LayerNorm(config.decoder_dim)
        self.decoder_pred = nn.Linear(config.decoder_dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        trunc_normal_(self.decoder_pos_embed, std=0.02)

    def forward_encoder(
        self, imgs: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible tokens only. Returns ``(latent (B, 1 + K, D), mask, ids_restore)``."""
        tokens = self.encoder.embed(imgs)
        ids_keep, ids_restore, mask = random_masking(noise, self.config.mask_ratio)
        return self.encoder.encode(gather_tokens(tokens, ids_keep)), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict the pixels of every token, ``(B, L, patch_dim)``, from the visible latent."""
        x = self.decoder_embed(latent)
        cls, visible = x[:, :1], x[:, 1:]
        hidden = ids_restore.shape[1] - visible.shape[1]
        tokens = gather_tokens(torch.cat([visible, self.mask_token.expand(x.shape[0], hidden, -1)], dim=1), ids_restore)
        x = self.decoder_blocks(torch.cat([cls, tokens], dim=1) + self.decoder_pos_embed)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def reconstruct(
        self, imgs: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, predicted patches ``(B, L, patch_dim)`` and mask ``(B, L)`` for ``imgs``.

        ``noise`` (``(B, L)``) fixes the mask; by default it is drawn from torch's global generator.
        """
        if noise is None:
            noise = torch.rand(imgs.shape[0], self.encoder.num_tokens(*imgs.shape[-2:]), device=imgs.device)
        latent, mask, ids_restore = self.forward_encoder(imgs, noise.to(imgs.device))
        pred = self.forward_decoder(latent, ids_restore)
        loss = masked_patch_loss(self.encoder.patchify(imgs), pred, mask, self.config.norm_pix_loss)
        return loss, pred, mask

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training step's loss on ``batch["views"][0]``, masks drawn from ``batch["seed"]``."""
        imgs = batch["views"][0]
        noise = masking_noise(batch["seed"], self.encoder.num_tokens(*imgs.shape[-2:]))
        loss, _, _ = self.reconstruct(imgs, noise)
        return loss, {"loss": loss.detach()}

    def after_backward(self, step: int) -> None:
        """Nothing to do: every MAE parameter is updated every step."""

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Nothing to do: MAE has no target network."""

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights (the decoder is discarded after pre-training)."""
        return self.encoder.state_dict()

    def export_encoder(self) -> ViTEncoder:
        """A copy of the pre-trained encoder, in eval mode, without the decoder."""
        return copy.deepcopy(self.encoder).eval()
