"""Memory-lean pieces of Mix-FFN: autograd functions that keep the cheap SiLU out of saved activations.

Per Mix-FFN layer (hidden width h), plain autograd keeps SiLU's input and output (2h each, the
second as the depthwise conv's input), and for the gate the temporal conv's output (2h) plus
silu(gate) (h), next to the rest of the layer's activations. These functions save only their inputs
and recompute the SiLU (an elementwise op, a few percent of the layer's time) in backward: 3h fewer
per token, with the same convolution kernels and the same numbers as plain autograd.

Used whenever gradients are recorded outside autocast; under autocast Mix-FFN takes the plain path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d silu(x) / dx * grad, as silu's own backward computes it."""
    return torch.ops.aten.silu_backward(grad, x)


class SiluDepthwiseConv2d(torch.autograd.Function):
    """conv2d(silu(x), weight, bias) for a depthwise 'same' conv; saves x, not silu(x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(F.silu(x), weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        activated = F.silu(x)
        grad_in, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, activated, weight, [weight.shape[0]] if ctx.has_bias else None,
            [1, 1], [ctx.padding, ctx.padding], [1, 1], False, [0, 0], weight.shape[0],
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]])
        grad_x = silu_grad(x, grad_in) if grad_in is not None else None
        return grad_x, grad_weight, grad_bias, None


class SiluGate(torch.autograd.Function):
    """value * silu(gate) for z = [value, gate] on the last axis; saves z, not silu(gate)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        value, gate = z.chunk(2, dim=-1)
        return value * F.silu(gate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        value, gate = z.chunk(2, dim=-1)
        return torch.cat((grad * F.silu(gate), silu_grad(gate, grad * value)), dim=-1)


def fused_enabled(x: torch.Tensor) -> bool:
    """The lean path runs when gradients are recorded outside autocast."""
    return torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)
