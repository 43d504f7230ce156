"""Optimisation set-up shared by the stages: AdamW groups, the warm-up and
linear-decay schedule, seeds."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def linear_warmup_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0, kind: str = "adamw"):
    """AdamW (or SGD with momentum 0.9) without decay on biases and LayerNorm
    weights (BERT practice). Adam divides each gradient by its running
    scale, so every weight moves by about ``lr`` per step however small the
    loss; SGD moves it in proportion to the gradient."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)
