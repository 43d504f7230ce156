"""Strong views for self-training: random token masking (back-translated
text arrives from the translation pipeline as ordinary token ids)."""

from __future__ import annotations

from typing import Iterable, Optional

import torch


def random_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: Iterable[int],
                      mask_id: int, rate: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each ordinary token by ``mask_id`` with probability ``rate``.
    Special tokens ([CLS], [SEP], ...) and padding are never masked. Returns
    a new tensor; the input is left untouched."""
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for sid in special_ids:
        special |= input_ids == sid
    maskable = attention_mask.bool() & ~special
    draw = torch.rand(input_ids.shape, generator=generator, device="cpu").to(input_ids.device)
    return torch.where(maskable & (draw < rate), torch.full_like(input_ids, mask_id), input_ids)
