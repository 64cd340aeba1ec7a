"""Collectives of sequence parallelism, each with its autograd (the backward is the adjoint collective).

All of them work on gloo (CPU) and nccl (GPU): all_reduce, all_gather and all_to_all only. Every
tensor a rank sends is counted in `TRAFFIC` (bytes per kind of collective), which is how the
benchmark reports communication from the tensors actually sent rather than from a formula.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist

TRAFFIC: Counter = Counter()


def _count(kind: str, *tensors: torch.Tensor) -> None:
    TRAFFIC[kind] += sum(t.numel() * t.element_size() for t in tensors)


def _gather(x: torch.Tensor, group) -> List[torch.Tensor]:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    _count("all_gather", x)
    return parts


def _all_reduce(x: torch.Tensor, group, kind: str = "all_reduce") -> torch.Tensor:
    x = x.contiguous().clone()
    dist.all_reduce(x, group=group)
    _count(kind, x)
    return x


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        # out = sum_r x_r on every rank, so dL/dx_r = sum over ranks of dL/dout
        return _all_reduce(grad, ctx.group), None


def all_reduce_sum(x: torch.Tensor, group) -> torch.Tensor:
    return _AllReduceSum.apply(x, group)


class _ExclusivePrefixSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group, ctx.rank = group, dist.get_rank(group)
        parts = _gather(x, group)
        return sum(parts[:ctx.rank], torch.zeros_like(x))

    @staticmethod
    def backward(ctx, grad):
        # out_s = sum_{r < s} x_r, so dL/dx_r = sum_{s > r} dL/dout_s
        parts = _gather(grad, ctx.group)
        return sum(parts[ctx.rank + 1:], torch.zeros_like(grad)), None


def exclusive_prefix_sum(x: torch.Tensor, group) -> torch.Tensor:
    """On rank r, the sum of x over ranks 0 .. r-1 (zeros on rank 0)."""
    return _ExclusivePrefixSum.apply(x, group)


def _all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    size = dist.get_world_size(group)
    inputs = [part.contiguous() for part in x.chunk(size, dim=scatter_dim)]
    outputs = [torch.empty_like(inputs[0]) for _ in range(size)]
    dist.all_to_all(outputs, inputs, group=group)
    # what leaves this rank: every part but its own
    _count("all_to_all", *(p for i, p in enumerate(inputs) if i != dist.get_rank(group)))
    return torch.cat(outputs, dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter_dim, gather_dim, group):
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _all_to_all(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, gather_dim, scatter_dim, ctx.group), None, None, None


def all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    """Split x into world-size parts along `scatter_dim`, send part i to rank i, concatenate what
    arrives along `gather_dim` (Ulysses: heads scattered, sequence gathered, and back)."""
    return _AllToAll.apply(x, scatter_dim, gather_dim, group)


class _GatherAlong(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group, ctx.rank, ctx.size = dim, group, dist.get_rank(group), x.shape[dim]
        return torch.cat(_gather(x, group), dim=dim)

    @staticmethod
    def backward(ctx, grad):
        # every rank uses the whole gathered tensor: this rank's slice gets the sum of their gradients
        grad = _all_reduce(grad, ctx.group, "all_gather")
        return grad.narrow(ctx.dim, ctx.rank * ctx.size, ctx.size), None, None


def gather_along(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    """Equal-size slices from every rank concatenated along `dim`, in rank order."""
    return _GatherAlong.apply(x, dim, group)


class _Halo(torch.autograd.Function):
    """(left, right) neighbour frames of each rank's slice along dim 1."""

    @staticmethod
    def forward(ctx, x, left, right, group):
        ctx.group, ctx.rank, ctx.size = group, dist.get_rank(group), dist.get_world_size(group)
        ctx.left, ctx.right, ctx.frames = left, right, x.shape[1]
        # each rank publishes its first `right` and last `left` frames (what its neighbours need)
        edges = _gather(torch.cat((x[:, :right], x[:, x.shape[1] - left:]), dim=1), group)
        from_left = edges[ctx.rank - 1][:, right:] if ctx.rank > 0 else x.new_zeros(x.shape[0], left, *x.shape[2:])
        from_right = (edges[ctx.rank + 1][:, :right] if ctx.rank + 1 < ctx.size
                      else x.new_zeros(x.shape[0], right, *x.shape[2:]))
        return from_left, from_right

    @staticmethod
    def backward(ctx, grad_left, grad_right):
        # grad_left belongs to the previous rank's last frames, grad_right to the next rank's first
        grads = _gather(torch.cat((grad_left, grad_right), dim=1), ctx.group)
        shape = (grad_left.shape[0], ctx.frames, *grad_left.shape[2:])
        out = grad_left.new_zeros(shape)
        if ctx.rank + 1 < ctx.size:  # the next rank used my last `left` frames as its left halo
            out[:, ctx.frames - ctx.left:] += grads[ctx.rank + 1][:, :ctx.left]
        if ctx.rank > 0:  # the previous rank used my first `right` frames as its right halo
            out[:, :ctx.right] += grads[ctx.rank - 1][:, ctx.left:]
        return out, None, None, None


def halo_exchange(x: torch.Tensor, left: int, right: int, group) -> Tuple[torch.Tensor, torch.Tensor]:
    """x (B, T_local, ...): the `left` frames before this slice (the previous rank's last ones, zeros
    on the first rank) and the `right` frames after it (the next rank's first ones, zeros on the last)."""
    if x.shape[1] < max(left, right):
        raise ValueError(f"a sequence-parallel slice of {x.shape[1]} frames cannot supply a halo of "
                         f"{max(left, right)}; use fewer ranks or longer videos")
    return _Halo.apply(x, left, right, group)


def traffic_reset() -> None:
    TRAFFIC.clear()


def traffic_bytes(kind: Optional[str] = None) -> int:
    return sum(TRAFFIC.values()) if kind is None else TRAFFIC[kind]
