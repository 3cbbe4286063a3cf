"""Tests for cellstudy.applications.interpret: MAE reconstructions and class-token attention maps."""

import numpy as np
import pytest
import torch

from cellstudy.applications import interpret
from cellstudy.applications.interpret import (
    attention_on_mask,
    cls_attention,
    mae_reconstruction,
)
from cellstudy.models.mae import MAE, MAEConfig, masking_noise
from cellstudy.models.vit import EncoderConfig, build_encoder

SIZE, PATCH = 32, 8


def tiny_mae(norm_pix_loss: bool = True) -> MAE:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(depth=2, patch_size=PATCH, img_size=SIZE))
    return MAE(
        encoder, MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2, norm_pix_loss=norm_pix_loss), SIZE
    ).eval()


def test_reconstruction_keeps_visible_pixels_and_blanks_exactly_the_hidden_patches():
    model = tiny_mae()
    imgs = torch.randn(2, 5, SIZE, SIZE)
    result = mae_reconstruction(model, imgs, seed=3)
    hidden = result.hidden.bool()
    n_tokens = (SIZE // PATCH) ** 2
    hidden_tokens = n_tokens - round(n_tokens * (1 - model.config.mask_ratio))
    assert hidden.sum().item() == 2 * hidden_tokens * PATCH * PATCH * 5
    assert torch.isnan(result.masked[hidden]).all() and torch.equal(result.masked[~hidden], imgs[~hidden])
    assert torch.equal(result.reconstructed[~hidden], imgs[~hidden])
    assert torch.equal(result.original, imgs)
    again = mae_reconstruction(model, imgs, seed=3)
    assert torch.equal(again.reconstructed, result.reconstructed)


def test_hidden_patches_are_predictions_rescaled_by_the_true_patch_statistics():
    imgs = torch.randn(1, 5, SIZE, SIZE) * 3 + 1
    for norm_pix_loss in (False, True):
        model = tiny_mae(norm_pix_loss)
        result = mae_reconstruction(model, imgs, seed=0)
        _, pred, mask = model.reconstruct(imgs, masking_noise(torch.tensor([0]), (SIZE // PATCH) ** 2))
        token = int(mask[0].nonzero()[0])
        row, col = divmod(token, SIZE // PATCH)
        patch = imgs[0, :, row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH]
        expected = pred[0, token].reshape(PATCH, PATCH, 5).permute(2, 0, 1)
        if norm_pix_loss:
            expected = expected * (patch.var() + 1e-6) ** 0.5 + patch.mean()
        shown = result.reconstructed[0, :, row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH]
        torch.testing.assert_close(shown, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channel_agnostic", [False, True])
def test_cls_attention_matches_timms_explicit_softmax(channel_agnostic):
    torch.manual_seed(0)
    encoder = build_encoder(
        EncoderConfig(depth=2, patch_size=PATCH, img_size=SIZE, channel_agnostic=channel_agnostic)
    ).eval()
    imgs = torch.randn(2, 5, 48, 40)  # a crop size other than img_size: resampled position embedding
    maps = cls_attention(encoder, imgs)
    assert maps.shape == (2, encoder.blocks[-1].attn.num_heads, 6, 5)

    attn = encoder.blocks[-1].attn
    attn.fused_attn = False  # timm then computes the softmax explicitly and passes it through attn_drop
    captured = {}
    hook = attn.attn_drop.register_forward_hook(lambda module, inputs, output: captured.update(w=output))
    with torch.no_grad():
        encoder.forward_features(imgs)
    hook.remove()
    cls_row = captured["w"][:, :, 0]
    expected = cls_row[:, :, 1:].reshape(2, attn.num_heads, -1, 6, 5).sum(dim=2)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps.sum(dim=(-2, -1)) + cls_row[:, :, 0], torch.ones(2, attn.num_heads))


def test_attention_on_mask_weights_patches_by_their_masked_fraction():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = True  # patch (0, 0) of a 2 x 2 grid fully inside, the others outside
    mask[4:6, 4:8] = True  # patch (1, 1) half inside
    attention = np.array([[[0.7, 0.1], [0.1, 0.1]], [[0.25, 0.25], [0.25, 0.25]]])
    shares = attention_on_mask(attention, mask)
    np.testing.assert_allclose(shares, [0.7 + 0.1 * 0.5, (1 + 0.5) / 4])
    assert shares[1] == pytest.approx(mask.mean())  # even attention gives the mask's area share


def test_nuclear_attention_shares_and_verdicts():
    attention = np.zeros((1, 2, 2, 2))
    attention[0, 0] = [[1.0, 0.0], [0.0, 0.0]]  # head 1 all on the nucleus
    attention[0, 1] = [[0.0, 0.5], [0.25, 0.25]]  # head 2 none on it
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True  # the top-left patch: a quarter of the crop
    table = interpret.nuclear_attention(attention, [mask], ["DMSO"])
    assert table.loc[0, "nuclei, share of crop"] == 0.25
    assert table.loc[0, "head 1"] == pytest.approx(1.0) and table.loc[0, "head 2"] == pytest.approx(0.0)
    assert "the heads specialise" in interpret.describe_nuclear_attention(table)
    even = table.assign(**{"head 1": 0.25, "head 2": 0.25})
    assert interpret.describe_nuclear_attention(even).endswith("no head concentrates on nuclei.")
