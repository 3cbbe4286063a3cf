"""Tests for cellstudy.models.vit: tokenisation, patchify, channel handling, presets."""

import pytest
import torch

from cellstudy.models.vit import (
    SIZES,
    ChannelAgnosticViT,
    EncoderConfig,
    ViTEncoder,
    build_encoder,
)

P = 8


def tiny(channel_agnostic: bool = False, depth: int = 1) -> ViTEncoder:
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(depth=depth, patch_size=P, img_size=32, channel_agnostic=channel_agnostic))


@pytest.fixture
def imgs() -> torch.Tensor:
    return torch.randn(2, 5, 32, 48, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("channel_agnostic", [False, True])
def test_patchify_unpatchify_round_trip(imgs, channel_agnostic):
    encoder = tiny(channel_agnostic)
    patches = encoder.patchify(imgs)
    assert patches.shape[1] == encoder.num_tokens(32, 48)
    assert torch.equal(encoder.unpatchify(patches, 32, 48), imgs)


def test_patchify_token_is_its_square_of_pixels(imgs):
    encoder = tiny()
    patches = encoder.patchify(imgs)
    row, col, cols = 2, 4, 48 // P
    square = imgs[1, :, row * P : (row + 1) * P, col * P : (col + 1) * P]  # (C, p, p)
    assert torch.equal(patches[1, row * cols + col], square.permute(1, 2, 0).reshape(-1))


def test_channel_agnostic_token_is_one_channel_square(imgs):
    encoder = tiny(channel_agnostic=True)
    patches = encoder.patchify(imgs)
    channel, row, col, rows, cols = 3, 1, 5, 32 // P, 48 // P
    square = imgs[0, channel, row * P : (row + 1) * P, col * P : (col + 1) * P]
    assert patches.shape == (2, 5 * rows * cols, P * P)
    assert torch.equal(patches[0, channel * rows * cols + row * cols + col], square.reshape(-1))


def test_embed_projects_patchify_tokens_in_the_same_order(imgs):
    """embed() minus position embedding is the linear patch projection of patchify()'s tokens."""
    encoder = tiny()
    weight, bias = encoder.patch_embed.proj.weight, encoder.patch_embed.proj.bias  # (D, C, p, p)
    expected = encoder.patchify(imgs) @ weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).T + bias
    position = encoder.position_embedding(encoder.patch_grid(32, 48))
    torch.testing.assert_close(encoder.embed(imgs) - position, expected, atol=1e-5, rtol=1e-5)


def test_channel_agnostic_embed_shares_one_projection(imgs):
    encoder = tiny(channel_agnostic=True)
    weight, bias = encoder.patch_embed.proj.weight, encoder.patch_embed.proj.bias  # (D, 1, p, p)
    projected = encoder.patchify(imgs) @ weight.reshape(weight.shape[0], -1).T + bias
    position = encoder.position_embedding(encoder.patch_grid(32, 48)).repeat(1, 5, 1)
    channel = encoder.channel_embed.expand(-1, -1, 24, -1).reshape(1, 5 * 24, -1)
    torch.testing.assert_close(encoder.embed(imgs), projected + position + channel, atol=1e-5, rtol=1e-5)


def test_channel_agnostic_is_aware_of_channel_order(imgs):
    encoder = tiny(channel_agnostic=True, depth=2).eval()
    permuted = imgs[:, [4, 2, 0, 1, 3]]
    with torch.no_grad():
        assert not torch.allclose(encoder(imgs), encoder(permuted), atol=1e-4)
        encoder.channel_embed.copy_(encoder.channel_embed[:, :1].expand_as(encoder.channel_embed))
        torch.testing.assert_close(encoder(imgs), encoder(permuted), atol=1e-5, rtol=1e-5)


def test_standard_encoder_depends_on_channel_order(imgs):
    encoder = tiny().eval()
    with torch.no_grad():
        assert not torch.allclose(encoder(imgs), encoder(imgs[:, [1, 0, 2, 3, 4]]), atol=1e-4)


@pytest.mark.parametrize("channel_agnostic", [False, True])
def test_outputs_and_pooled_features(imgs, channel_agnostic):
    encoder = tiny(channel_agnostic).eval()
    with torch.no_grad():
        tokens = encoder.forward_features(imgs)
        cls, mean = encoder.pooled_features(imgs)
        assert tokens.shape == (2, 1 + encoder.num_tokens(32, 48), 192)
        torch.testing.assert_close(cls, tokens[:, 0])
        torch.testing.assert_close(mean, tokens[:, 1:].mean(dim=1))
        torch.testing.assert_close(encoder(imgs), cls)


def test_position_embedding_kept_at_native_grid_and_resampled_elsewhere():
    encoder = tiny()
    assert torch.equal(encoder.position_embedding((4, 4)), encoder.pos_embed[:, 1:])
    assert encoder.position_embedding((2, 3)).shape == (1, 6, 192)


def test_rejects_wrong_channels_and_sizes():
    encoder = tiny()
    with pytest.raises(ValueError, match="5, H, W"):
        encoder(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        encoder(torch.zeros(1, 5, 30, 32))


def test_build_encoder_presets():
    for size, (width, _, heads) in SIZES.items():
        encoder = build_encoder(EncoderConfig(size=size, depth=1, patch_size=16, img_size=32))
        assert encoder.embed_dim == width and encoder.blocks[0].attn.num_heads == heads
    assert len(build_encoder(EncoderConfig(depth=None)).blocks) == 12
    assert isinstance(build_encoder(EncoderConfig(channel_agnostic=True, depth=1)), ChannelAgnosticViT)
    with pytest.raises(ValueError, match="unknown encoder size 'huge'"):
        build_encoder(EncoderConfig(size="huge"))


@pytest.mark.parametrize("cls, projected_channels", [(ViTEncoder, 3), (ChannelAgnosticViT, 1)])
def test_encoders_are_built_from_the_config(cls, projected_channels):
    config = EncoderConfig(size="small", depth=2, patch_size=4, img_size=16, in_chans=3, drop_path_rate=0.2)
    encoder = cls(config)
    assert encoder.patch_embed.proj.weight.shape == (384, projected_channels, 4, 4)
    assert encoder.pos_embed.shape == (1, 1 + (16 // 4) ** 2, 384)
    assert len(encoder.blocks) == 2 and encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert encoder.num_channels == 3
