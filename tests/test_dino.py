"""Tests for cellstudy.models.dino: loss, centre, EMA, schedules, collapse diagnostics."""

import math

import numpy as np
import pytest
import torch

from cellstudy.models.dino import (
    DINO,
    DINOConfig,
    DINOHead,
    collapse_diagnostics,
    collapse_warnings,
    dino_loss,
    ema_update,
    teacher_momentum,
    teacher_temperature,
    updated_center,
)
from cellstudy.models.vit import EncoderConfig, build_encoder

CONFIG = DINOConfig(out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16, freeze_last_layer_steps=2)


def tiny_dino(config: DINOConfig = CONFIG) -> DINO:
    torch.manual_seed(0)
    return DINO(build_encoder(EncoderConfig(depth=1, patch_size=8, img_size=32)), config)


def views(batch: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(batch, 5, 32, 32, generator=g) for _ in range(2)] + [
        torch.randn(batch, 5, 16, 16, generator=g) for _ in range(3)
    ]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_hand_computed_cross_entropy():
    rng = np.random.default_rng(0)
    batch, k, n_views = 4, 10, 5
    student, teacher, center = (
        rng.normal(size=(n_views * batch, k)),
        rng.normal(size=(2 * batch, k)),
        rng.normal(size=(1, k)),
    )
    t_temp, s_temp = 0.04, 0.1
    terms = []
    for i in range(2):
        q = softmax((teacher[i * batch : (i + 1) * batch] - center) / t_temp)
        for v in range(n_views):
            if v != i:
                log_p = np.log(softmax(student[v * batch : (v + 1) * batch] / s_temp))
                terms.append(np.mean(np.sum(-q * log_p, axis=1)))
    student_t, teacher_t, center_t = (torch.tensor(a, dtype=torch.float32) for a in (student, teacher, center))
    loss = dino_loss(student_t, teacher_t, center_t, s_temp, t_temp, n_views)
    assert len(terms) == 8
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_center_update_formula():
    center, logits = torch.randn(1, 6), torch.randn(8, 6)
    expected = 0.9 * center + 0.1 * logits.mean(dim=0, keepdim=True)
    torch.testing.assert_close(updated_center(center, logits, 0.9), expected)


def test_ema_update_formula():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = teacher.weight.detach().clone()
    ema_update(teacher, student, 0.99)
    torch.testing.assert_close(teacher.weight, 0.99 * before + 0.01 * student.weight.detach())


def test_teacher_temperature_warms_up_linearly():
    config = DINOConfig(warmup_teacher_temp=0.02, teacher_temp=0.06, warmup_teacher_temp_steps=10)
    assert [teacher_temperature(s, config) for s in (0, 5, 10, 50)] == pytest.approx([0.02, 0.04, 0.06, 0.06])


def test_teacher_momentum_rises_by_cosine_to_one():
    values = [teacher_momentum(s, 100, 0.996) for s in (0, 50, 100)]
    assert values == pytest.approx([0.996, 0.998, 1.0])
    assert teacher_momentum(25, 100, 0.996) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)


def test_head_freezes_prototype_norm():
    head = DINOHead(8, 20, 16, 4, 3, norm_last_layer=True)
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(20))
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    assert head(torch.randn(5, 8)).shape == (5, 20)


def test_forward_uses_global_views_for_teacher_and_updates_center():
    model = tiny_dino()
    seen = []
    model.teacher.encoder.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    loss, metrics = model({"views": views()}, step=0)
    assert seen == [(6, 5, 32, 32)]
    assert torch.isfinite(loss) and not torch.equal(model.center, torch.zeros(1, 64))
    assert set(metrics) == {"loss", "teacher_entropy", "teacher_kl_uniform", "embedding_std"}


def test_last_layer_frozen_then_teacher_follows_student():
    model = tiny_dino()
    loss, _ = model({"views": views()}, step=1)
    loss.backward()
    model.after_backward(step=1)
    assert all(p.grad is None for p in model.student.head.last_layer.parameters())
    assert model.student.encoder.cls_token.grad is not None
    with torch.no_grad():
        model.student.encoder.cls_token.add_(1.0)
    before = model.teacher.encoder.cls_token.detach().clone()
    model.after_optimizer_step(step=0, total_steps=10)
    m = teacher_momentum(0, 10, CONFIG.teacher_momentum)
    torch.testing.assert_close(model.teacher.encoder.cls_token, m * before + (1 - m) * (before + 1.0))


def test_teacher_stays_in_eval_mode():
    model = tiny_dino().train()
    assert model.student.training and not model.teacher.training


def test_diagnostics_closed_forms():
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = collapse_diagnostics(probs, embeddings)
    assert out["teacher_entropy"].item() == pytest.approx(math.log(4) / 2)
    assert out["teacher_kl_uniform"].item() == pytest.approx(math.log(4) / 2)
    assert out["embedding_std"].item() == pytest.approx(math.sqrt(0.5) * math.sqrt(2))


def test_collapse_flags_constant_output_teacher():
    model = tiny_dino()
    with torch.no_grad():  # final norm with zero gain: every input gets the same embedding
        model.teacher.encoder.norm.weight.zero_()
    _, metrics = model({"views": views()}, step=0)
    flags = collapse_warnings({k: v.item() for k, v in metrics.items()}, CONFIG)
    assert metrics["embedding_std"].item() < 1e-6 and "constant" in flags


def test_collapse_flags_uniform_teacher_and_passes_healthy_one():
    uniform = collapse_diagnostics(torch.full((8, 16), 1 / 16), torch.randn(8, 4))
    assert collapse_warnings({k: float(v) for k, v in uniform.items()}, CONFIG) == ["uniform"]
    _, metrics = tiny_dino()({"views": views()}, step=0)
    assert collapse_warnings({k: v.item() for k, v in metrics.items()}, CONFIG) == []


def test_export_encoder_is_teacher_copy():
    model = tiny_dino()
    exported = model.export_encoder()
    for key, value in model.teacher.encoder.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value)
    assert exported is not model.teacher.encoder and not exported.training
