"""The DeepSpeed engine a TrainConfig asks for: ZeRO stage, AdamW, warmup + decay, clipping.

Precision: DeepSpeed keeps fp32 weights, gradients and optimizer state in every mode; with
train.precision=bf16 the Trainer runs the objective under torch.autocast(bfloat16). DeepSpeed's
own bf16 section also works on CPU, but it stores the module's weights in bf16: every objective
would have to cast its inputs, and the EMA would average rounded weights. Autocast gives the same
bf16 matmuls and convolutions (AMX on this CPU) with exact fp32 master weights.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Any

import torch
from torch import nn

from reel.train.schedule import lr_multiplier


def import_deepspeed():
    """deepspeed, told the accelerator up front (it otherwise probes for one and warns) and quiet."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    from deepspeed.utils import logger as ds_logger

    # On CPU DeepSpeed compiles a shared-memory all-reduce (a C++ build under a file lock that a killed
    # process leaves behind, hanging the next run) the first time a group starts; only its inference
    # all-reduce uses it, never training, so it is not built.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    ds_logger.setLevel(logging.WARNING)
    # DeepSpeed still calls collectives torch renamed; the warning is theirs to fix, not the user's.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    return deepspeed


class AdamWSkippingNonFinite(torch.optim.AdamW):
    """AdamW that clips by global norm and skips the update when that norm is not finite.

    Used without ZeRO, where DeepSpeed hands the client optimizer the gradients untouched.
    DeepSpeed's engine reads `overflow` and `_global_grad_norm` from it as from its own optimizers:
    on overflow it clears the gradients and leaves the moments and the scheduler as they were.
    """

    def __init__(self, params, max_grad_norm: float = 0.0, **kwargs):
        super().__init__(params, **kwargs)
        self.max_grad_norm = max_grad_norm
        self.overflow = False
        self._global_grad_norm = None

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        self._global_grad_norm = float(norm)
        self.overflow = not math.isfinite(self._global_grad_norm)
        if self.overflow:
            return None
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.max_grad_norm, norm)
        return super().step(closure)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and kernels only: decaying biases and norm gains pulls them to zero for no gain."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, train) -> torch.optim.Optimizer:
    kwargs = dict(lr=float(train.lr), betas=tuple(float(b) for b in train.betas), foreach=True)
    groups = parameter_groups(model, float(train.weight_decay))
    if int(train.zero_stage) == 0:
        return AdamWSkippingNonFinite(groups, max_grad_norm=float(train.grad_clip), **kwargs)
    return torch.optim.AdamW(groups, **kwargs)  # ZeRO clips and checks the norm of its partitions itself


def deepspeed_config(train, dp_size: int) -> dict[str, Any]:
    stage = int(train.zero_stage)
    return {
        "train_micro_batch_size_per_gpu": int(train.batch_size),
        "gradient_accumulation_steps": int(train.grad_accum),
        "train_batch_size": int(train.batch_size) * int(train.grad_accum) * dp_size,
        # The Trainer owns the step boundary: a micro batch whose loss is not finite gets no
        # backward, so DeepSpeed could not tell from its count of backwards where a step ends.
        "managed_gradient_accumulation": False,
        # Without ZeRO the optimizer clips (it must see the norm to skip non-finite updates).
        "gradient_clipping": float(train.grad_clip) if stage > 0 else 0.0,
        "zero_optimization": {"stage": stage, "overlap_comm": stage >= 2},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }


def build_engine(model: nn.Module, train, dp_size: int, mpu=None):
    """(engine, lr_scheduler) for `model`; the engine's optimizer state is fp32. `mpu` describes the
    data/sequence-parallel groups under sequence parallelism (reel.parallel.groups.DeepSpeedGroups)."""
    deepspeed = import_deepspeed()
    optimizer = build_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(train))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(train, dp_size), dist_init_required=False,
                                           mpu=mpu)
    return engine, scheduler
