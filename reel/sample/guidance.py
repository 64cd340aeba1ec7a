"""Classifier-free guidance with the conditional and unconditional passes batched into one forward."""
from __future__ import annotations

from typing import Callable, Optional

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_velocity(model, text_emb: torch.Tensor, text_mask: Optional[torch.Tensor],
                    negative_emb: torch.Tensor, negative_mask: Optional[torch.Tensor],
                    guidance: float) -> Velocity:
    """velocity(x, t) = v_neg + guidance (v_cond - v_neg); guidance 1 (or less) runs the conditional pass only."""
    if guidance <= 1.0:
        return lambda x, t: model(x, t.to(x.dtype).expand(x.shape[0]), text_emb, text_mask)
    batch = text_emb.shape[0]
    negative_emb = negative_emb.expand(batch, -1, -1)
    emb = torch.cat([text_emb, negative_emb])
    mask = None
    if text_mask is not None or negative_mask is not None:
        ones = torch.ones(batch, text_emb.shape[1], dtype=torch.bool, device=text_emb.device)
        mask = torch.cat([ones if text_mask is None else text_mask,
                          ones if negative_mask is None else negative_mask.expand(batch, -1)])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = model(torch.cat([x, x]), t.to(x.dtype).expand(2 * batch), emb, mask)
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return velocity
