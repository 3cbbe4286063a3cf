"""DINO self-distillation (Caron et al. 2021) for 5-channel crops.

A student network (encoder + projection head) sees all crops of a sample (two
global crops and several smaller local crops, at native resolution); a teacher
with the same architecture sees only the global crops. The teacher's output,
centred (minus a running mean over batches) and sharpened (low temperature), is
the target of a cross-entropy for every student crop of another view. The
teacher is not trained by gradients: its weights are an exponential moving
average (EMA) of the student's, with a momentum rising from ``teacher_momentum``
to 1 along a cosine.

Centring keeps one output dimension from dominating; sharpening keeps the
output from becoming uniform. When both fail the network has collapsed:
:func:`collapse_diagnostics` measures it every step (teacher entropy, KL between
teacher output and uniform, standard deviation of the normalised embeddings) and
:func:`collapse_warnings` names the failure.

After pre-training the teacher's encoder is the one to keep
(:meth:`DINO.export_encoder`); its class token is the image embedding.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cellstudy.models.vit import ViTEncoder


@dataclass
class DINOConfig:
    """DINO hyper-parameters (learning rate, weight decay and clipping live in the training config).

    Attributes
    ----------
    out_dim
        Prototypes K (output dimension of the head). Caron et al. use 65536 on
        ImageNet; a few thousand suffice for small data and CPU runs.
    head_hidden_dim
        Width of the head's hidden layers (2048 in Caron et al.).
    head_bottleneck_dim
        Width of the L2-normalised bottleneck before the prototypes (256).
    head_layers
        Linear layers of the head before the bottleneck output (3).
    norm_last_layer
        Freeze the norm of the prototype layer at 1 (weight normalisation). Caron
        et al.: True is more stable; False can be better for ViT-S but may collapse.
    student_temp
        Student softmax temperature (0.1).
    teacher_temp
        Teacher softmax temperature after warm-up (0.04; Caron et al. go up to 0.07
        for long runs; lower it if the teacher output stays near-uniform).
    warmup_teacher_temp
        Teacher temperature at step 0, rising linearly to ``teacher_temp``.
    warmup_teacher_temp_steps
        Length of that warm-up in steps (Caron et al.: 30 epochs). Use it when
        raising ``teacher_temp`` above 0.04.
    center_momentum
        Momentum of the running centre of teacher outputs (0.9).
    teacher_momentum
        EMA momentum of the teacher at step 0, rising to 1 by a cosine (0.996).
        Use 0.99-0.995 for small batches / short runs so the teacher keeps up.
    freeze_last_layer_steps
        Steps during which the prototype layer gets no update (Caron et al.: one
        epoch); stabilises the very start of training.
    collapse_kl
        :func:`collapse_warnings` reports "uniform" when the mean KL between the
        teacher output and uniform is below this (nats).
    collapse_std
        :func:`collapse_warnings` reports "constant" when the per-dimension std
        of the normalised teacher embeddings, times sqrt(D), is below this (a
        healthy spread gives about 1; identical embeddings give 0).
    """

    out_dim: int = 1024
    head_hidden_dim: int = 512
    head_bottleneck_dim: int = 128
    head_layers: int = 3
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_steps: int = 0
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996
    freeze_last_layer_steps: int = 0
    collapse_kl: float = 1.0e-3
    collapse_std: float = 1.0e-3


class DINOHead(nn.Module):
    """MLP, L2-normalised bottleneck, then weight-normalised prototypes (as in Caron et al.)."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, n_layers: int, norm_last_layer: bool
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad = not norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prototype scores (logits) ``(N, out_dim)``."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MultiCropNetwork(nn.Module):
    """Encoder + head applied to a list of crops of possibly different sizes.

    Crops of equal size go through the encoder together; the class tokens of all
    crops then go through the head in one batch.
    """

    def __init__(self, encoder: ViTEncoder, head: DINOHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-token embeddings ``(V * B, D)`` and logits ``(V * B, K)``, view-major."""
        groups = itertools.groupby(views, key=lambda view: view.shape[-2:])
        embedding = torch.cat([self.encoder(torch.cat(list(group))) for _, group in groups])
        return embedding, self.head(embedding)


def dino_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
    n_views: int,
    n_global: int = 2,
) -> torch.Tensor:
    """DINO's cross-entropy between teacher and student outputs of different views.

    Parameters
    ----------
    student_logits
        ``(n_views * B, K)``, view-major (global views first).
    teacher_logits
        ``(n_global * B, K)`` for the global views.
    center
        ``(1, K)`` running centre subtracted from the teacher logits.
    student_temp, teacher_temp
        Softmax temperatures.
    n_views, n_global
        Number of student views and of global (teacher) views.

    Returns
    -------
    Mean over pairs (teacher view i, student view v != i) of
    ``mean_b sum_k -softmax((t - c) / T_t)_k log softmax(s / T_s)_k``.
    """
    student = F.log_softmax(student_logits.float() / student_temp, dim=-1).chunk(n_views)
    teacher = F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1).chunk(n_global)
    pairs = [(t, s) for i, t in enumerate(teacher) for v, s in enumerate(student) if v != i]
    return sum(torch.sum(-t * s, dim=-1).mean() for t, s in pairs) / len(pairs)


def updated_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """``momentum * center + (1 - momentum) * mean(teacher_logits)``, the mean taken over all processes."""
    batch_sum = teacher_logits.float().sum(dim=0, keepdim=True)
    count = torch.tensor(float(teacher_logits.shape[0]), device=batch_sum.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(batch_sum)
        dist.all_reduce(count)
    return center * momentum + batch_sum / count * (1.0 - momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)


def teacher_temperature(step: int, config: DINOConfig) -> float:
    """Teacher temperature: linear from ``warmup_teacher_temp`` to ``teacher_temp``, then constant."""
    if step >= config.warmup_teacher_temp_steps:
        return config.teacher_temp
    fraction = step / config.warmup_teacher_temp_steps
    return config.warmup_teacher_temp + fraction * (config.teacher_temp - config.warmup_teacher_temp)


def teacher_momentum(step: int, total_steps: int, base: float) -> float:
    """EMA momentum: ``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2`` (``base`` -> 1)."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


def collapse_diagnostics(teacher_probs: torch.Tensor, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """Signs of collapse in a batch of teacher outputs.

    Parameters
    ----------
    teacher_probs
        ``(N, K)`` centred, sharpened teacher probabilities.
    embeddings
        ``(N, D)`` teacher class-token embeddings.

    Returns
    -------
    ``teacher_entropy``: mean entropy of the teacher distributions (0: one-hot;
    log K: uniform). ``teacher_kl_uniform``: mean KL(teacher || uniform) = log K -
    entropy. ``embedding_std``: std over the batch of the L2-normalised
    embeddings, averaged over dimensions, times sqrt(D) (about 1 when spread, 0
    when every input gives the same embedding).
    """
    probs = teacher_probs.float()
    entropy = -(probs * torch.log(probs.clamp_min(1.0e-12))).sum(dim=-1).mean()
    normalised = F.normalize(embeddings.float(), dim=-1)
    spread = normalised.std(dim=0).mean() * math.sqrt(normalised.shape[-1])
    return {
        "teacher_entropy": entropy,
        "teacher_kl_uniform": math.log(probs.shape[-1]) - entropy,
        "embedding_std": spread,
    }


def collapse_warnings(diagnostics: dict[str, float], config: DINOConfig) -> list[str]:
    """Names of the collapse modes that ``diagnostics`` show: "uniform" and/or "constant"."""
    warnings = []
    if diagnostics["teacher_kl_uniform"] < config.collapse_kl:
        warnings.append("uniform")
    if diagnostics["embedding_std"] < config.collapse_std:
        warnings.append("constant")
    return warnings


class DINO(nn.Module):
    """Student, EMA teacher and running centre; ``forward`` returns one step's loss.

    Parameters
    ----------
    encoder
        The ViT to pre-train; the student owns it, the teacher gets a copy.
    config
        DINO hyper-parameters.
    n_global
        Number of global crops (views shown to the teacher); they come first in ``views``.
    """

    def __init__(self, encoder: ViTEncoder, config: DINOConfig, n_global: int = 2) -> None:
        super().__init__()
        self.config = config
        self.n_global = n_global
        head = DINOHead(
            encoder.embed_dim,
            config.out_dim,
            config.head_hidden_dim,
            config.head_bottleneck_dim,
            config.head_layers,
            config.norm_last_layer,
        )
        self.student = MultiCropNetwork(encoder, head)
        self.teacher = copy.deepcopy(self.student).eval()
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, config.out_dim))

    def train(self, mode: bool = True) -> DINO:
        """Set the student's mode; the teacher always runs in eval mode (no stochastic depth)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one step on ``batch["views"]`` (global crops first); updates the centre."""
        views = batch["views"]
        with torch.no_grad():
            teacher_embedding, teacher_logits = self.teacher(views[: self.n_global])
        _, student_logits = self.student(views)
        temp = teacher_temperature(step, self.config)
        loss = dino_loss(
            student_logits, teacher_logits, self.center, self.config.student_temp, temp, len(views), self.n_global
        )
        teacher_probs = F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)
        self.center.copy_(updated_center(self.center, teacher_logits.detach(), self.config.center_momentum))
        metrics = {"loss": loss.detach(), **collapse_diagnostics(teacher_probs, teacher_embedding)}
        return loss, metrics

    def after_backward(self, step: int) -> None:
        """Drop the prototype layer's gradients during the first ``freeze_last_layer_steps`` steps."""
        if step < self.config.freeze_last_layer_steps:
            for param in self.student.head.last_layer.parameters():
                param.grad = None

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Move the teacher towards the student (EMA with the scheduled momentum)."""
        ema_update(self.teacher, self.student, teacher_momentum(step, total_steps, self.config.teacher_momentum))

    def export_encoder(self) -> ViTEncoder:
        """A copy of the teacher's encoder (the one DINO evaluates), in eval mode, without the head."""
        return copy.deepcopy(self.teacher.encoder).eval()
