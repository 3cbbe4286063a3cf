"""Looking inside pre-trained models: MAE reconstructions and ViT class-token attention.

- :func:`mae_reconstruction`: an image, the same image with MAE's hidden
  patches blanked, and MAE's reconstruction of them (visible patches pasted
  back), in the units of the input. With the normalised-pixel loss MAE
  predicts each hidden patch up to its own mean and scale; those are taken from
  the true patch (as in He et al.'s figures), so the reconstruction shows the
  predicted *structure* inside each patch.
- :func:`cls_attention`: how much the class token attends to each patch in the
  encoder's last block, per head (Caron et al.'s attention maps), and
  :func:`attention_on_mask`: how much of it falls on a region (e.g. nuclei).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from cellstudy.models.mae import MAE, masking_noise
from cellstudy.models.vit import ViTEncoder


class Reconstruction(NamedTuple):
    """MAE's view of a batch of images, each ``(B, C, H, W)`` in input units.

    Attributes
    ----------
    original
        The input.
    masked
        The input with hidden pixels set to NaN (shown blank).
    reconstructed
        Predicted pixels where hidden, the input where visible.
    hidden
        1 for hidden pixels, 0 for visible ones.
    """

    original: torch.Tensor
    masked: torch.Tensor
    reconstructed: torch.Tensor
    hidden: torch.Tensor


@torch.no_grad()
def mae_reconstruction(model: MAE, imgs: torch.Tensor, seed: int = 0) -> Reconstruction:
    """Mask ``imgs`` as in training (sample ``i`` with mask seed ``seed + i``) and reconstruct them."""
    encoder = model.encoder
    height, width = imgs.shape[-2:]
    seeds = seed + torch.arange(imgs.shape[0])
    _, pred, mask = model.reconstruct(imgs, masking_noise(seeds, encoder.num_tokens(height, width)))
    target = encoder.patchify(imgs)
    if model.config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mean
    hidden = encoder.unpatchify(mask[..., None].expand_as(target), height, width)
    reconstructed = encoder.unpatchify(pred, height, width) * hidden + imgs * (1 - hidden)
    return Reconstruction(imgs, imgs.masked_fill(hidden.bool(), float("nan")), reconstructed, hidden)


@torch.no_grad()
def cls_attention(encoder: ViTEncoder, imgs: torch.Tensor) -> torch.Tensor:
    """Attention of the class token to every patch in the last block, ``(B, heads, rows, cols)``.

    The softmax weights are recomputed from the last block's input (captured
    with a forward hook), as timm's fused attention does not return them. For a
    channel-agnostic encoder the weights of a patch's channel tokens are summed.
    """
    block = encoder.blocks[-1]
    captured = {}
    hook = block.norm1.register_forward_hook(lambda module, inputs, output: captured.update(x=output))
    try:
        encoder.forward_features(imgs)
    finally:
        hook.remove()
    x, attn = captured["x"], block.attn
    batch, tokens, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    query, key = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((query * attn.scale) @ key.transpose(-2, -1)).softmax(dim=-1)
    rows, cols = encoder.patch_grid(*imgs.shape[-2:])
    return weights[:, :, 0, 1:].reshape(batch, attn.num_heads, -1, rows, cols).sum(dim=2)


def attention_on_mask(attention: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each map's attention that falls on ``mask``.

    Parameters
    ----------
    attention
        ``(..., rows, cols)`` patch attention (e.g. :func:`cls_attention` of one image, per head).
    mask
        ``(H, W)`` boolean pixels (``H``, ``W`` multiples of ``rows``, ``cols``); a patch counts with the
        fraction of its pixels in the mask.

    Returns
    -------
    ``(...)`` array: ``sum(attention * patch fraction) / sum(attention)``. Compare it with the mask's
    share of the image (``mask.mean()``), what attention spread evenly would give.
    """
    rows, cols = attention.shape[-2:]
    height, width = mask.shape
    fraction = mask.reshape(rows, height // rows, cols, width // cols).mean(axis=(1, 3))
    return (attention * fraction).sum(axis=(-2, -1)) / attention.sum(axis=(-2, -1))


FOCUS = 1.5
"""A head concentrates on nuclei when its share of attention on them exceeds their share of the crop this many
times, and avoids them when it falls below it by this factor."""


def nuclear_attention(attention: np.ndarray, nuclei: Sequence[np.ndarray], names: Sequence[str]) -> pd.DataFrame:
    """Per crop (``names``), the share of the crop the ``nuclei`` masks cover and each head's share of attention on
    them (:func:`attention_on_mask`).
    """
    rows = []
    for e, (name, mask) in enumerate(zip(names, nuclei, strict=True)):
        shares = attention_on_mask(attention[e], mask)
        rows.append(
            {
                "compound": name,
                "nuclei, share of crop": mask.mean(),
                **{f"head {h + 1}": share for h, share in enumerate(shares)},
            }
        )
    return pd.DataFrame(rows)


def describe_nuclear_attention(nuclear: pd.DataFrame) -> str:
    """Which heads concentrate on nuclei or avoid them, averaged over the crops (:data:`FOCUS`)."""
    heads = nuclear.filter(like="head").mean()
    area = nuclear["nuclei, share of crop"].mean()
    focused, avoiding = heads.max() > FOCUS * area, heads.min() < area / FOCUS
    return (
        f"Averaged over the {len(nuclear)} crops, head {heads.idxmax().split()[-1]} puts {heads.max():.0%} of its "
        f"attention on nuclei and head {heads.idxmin().split()[-1]} {heads.min():.0%}, where nuclei cover "
        f"{area:.0%} of the crops: "
        + (
            "the heads specialise, one on nuclei and one away from them (cytoplasm or background)."
            if focused and avoiding
            else "one head concentrates on nuclei."
            if focused
            else "no head concentrates on nuclei."
        )
    )
