"""Tests for cellstudy.models.mae: masking, visible-only encoding, loss, export."""

import numpy as np
import pytest
import torch

from cellstudy.models.mae import (
    MAE,
    MAEConfig,
    masked_patch_loss,
    masking_noise,
    num_visible,
    random_masking,
)
from cellstudy.models.vit import EncoderConfig, build_encoder

P, SIZE = 8, 32


def tiny_mae(channel_agnostic: bool = False, **mae) -> MAE:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(depth=1, patch_size=P, img_size=SIZE, channel_agnostic=channel_agnostic))
    return MAE(encoder, MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2, **mae), SIZE)


@pytest.mark.parametrize(("length", "ratio"), [(16, 0.75), (64, 0.75), (49, 0.5), (10, 0.25), (80, 0.9)])
def test_masking_keeps_round_n_times_one_minus_ratio(length, ratio):
    noise = torch.rand(3, length, generator=torch.Generator().manual_seed(length))
    ids_keep, ids_restore, mask = random_masking(noise, ratio)
    keep = round(length * (1 - ratio))
    assert ids_keep.shape == (3, keep)
    assert torch.equal(mask.sum(dim=1), torch.full((3,), float(length - keep)))
    for b in range(3):
        assert set(ids_keep[b].tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
        assert set(ids_keep[b].tolist()) == set(torch.argsort(noise[b])[:keep].tolist())


def test_restore_indices_invert_the_shuffle():
    noise = torch.rand(4, 20, generator=torch.Generator().manual_seed(0))
    tokens = torch.arange(20.0).expand(4, 20)
    ids_keep, ids_restore, mask = random_masking(noise, 0.75)
    ids_shuffle = torch.argsort(noise, dim=1)
    shuffled = torch.gather(tokens, 1, ids_shuffle)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore), tokens)
    assert torch.equal(shuffled[:, : ids_keep.shape[1]], torch.gather(tokens, 1, ids_keep))


def test_num_visible_rejects_bad_ratio():
    with pytest.raises(ValueError, match="mask_ratio"):
        num_visible(16, 1.0)


def test_encoder_processes_only_visible_tokens():
    model = tiny_mae()
    seen = []
    model.encoder.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    model.reconstruct(torch.randn(2, 5, SIZE, SIZE))
    assert seen == [torch.Size([2, 1 + 4, 192])]  # 16 tokens, 75 % masked: class token + 4


def explicit_patches(imgs: np.ndarray) -> np.ndarray:
    """(B, L, p*p*C) patches by slicing, pixel-major then channel, row-major token order."""
    b, c, h, w = imgs.shape
    tokens = [
        imgs[:, :, r : r + P, q : q + P].transpose(0, 2, 3, 1).reshape(b, -1)
        for r in range(0, h, P)
        for q in range(0, w, P)
    ]
    return np.stack(tokens, axis=1)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_is_hand_computed_masked_mse(norm_pix_loss):
    model = tiny_mae(norm_pix_loss=norm_pix_loss)
    imgs = torch.randn(2, 5, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(4))
    loss, pred, mask = model.reconstruct(imgs, noise)
    target = explicit_patches(imgs.numpy().astype(np.float64))
    if norm_pix_loss:
        target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    hidden = noise.numpy().argsort(axis=1)[:, 4:]  # 12 masked tokens per image
    errors = [((pred.detach().numpy()[b, t] - target[b, t]) ** 2).mean() for b in range(2) for t in hidden[b]]
    assert loss.item() == pytest.approx(np.mean(errors), rel=1e-5)
    assert mask.sum().item() == 24


def test_masked_patch_loss_ignores_visible_tokens():
    target, pred = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    changed = pred.clone()
    changed[0, 1:3] += 100.0
    assert masked_patch_loss(target, pred, mask) == masked_patch_loss(target, changed, mask)


def test_channel_agnostic_mae_predicts_single_channel_patches():
    model = tiny_mae(channel_agnostic=True)
    loss, pred, mask = model.reconstruct(torch.randn(2, 5, SIZE, SIZE))
    assert pred.shape == (2, 5 * 16, P * P) and mask.sum(dim=1).tolist() == [60.0, 60.0]
    assert torch.isfinite(loss)


def test_masking_noise_is_a_function_of_each_seed_only():
    both = masking_noise(torch.tensor([11, 12]), 16)
    assert torch.equal(both[1], masking_noise(torch.tensor([12]), 16)[0])
    assert not torch.equal(both[0], both[1])


def test_training_forward_uses_sample_seeds():
    model = tiny_mae()
    batch = {"views": [torch.randn(2, 5, SIZE, SIZE)], "seed": torch.tensor([5, 6])}
    loss, metrics = model(batch, step=0)
    expected, _, _ = model.reconstruct(batch["views"][0], masking_noise(batch["seed"], 16))
    assert loss.item() == expected.item() == metrics["loss"].item()


def test_export_encoder_drops_decoder_and_copies():
    model = tiny_mae()
    exported = model.export_encoder()
    state = model.encoder_state_dict()
    assert set(exported.state_dict()) == set(state) and not any("decoder" in key for key in state)
    assert all(torch.equal(exported.state_dict()[key], value) for key, value in state.items())
    with torch.no_grad():
        exported.cls_token.add_(1.0)
    assert not torch.equal(exported.cls_token, model.encoder.cls_token)
    assert not exported.training
