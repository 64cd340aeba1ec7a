"""The ops of the chunk-causal deep-compression autoencoder (DC-AE style, in 3D).

Every op takes (x, cache): x is (B*n, C, t, H, W), n equal chunks folded into the batch, and the
cache carries the temporal context between chunks (reel/autoencoders/chunks.py).
Down and up blocks are residual autoencoding: a learned path plus a non-parametric shortcut
(space/time-to-channel then channel averaging; channel duplication then channel-to-space/time),
so the learned path only has to learn what the reshape misses, which keeps deep compression trainable.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from reel.autoencoders.chunks import ChunkCache, pack_time_space, unpack_time_space


class ChannelNorm(nn.Module):
    """RMSNorm ("rms") or LayerNorm ("layer") over the channels at each (t, h, w).

    Per position rather than GroupNorm: group statistics over the frame washed out global colour.
    """

    def __init__(self, channels: int, kind: str = "rms", eps: float = 1e-5):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        if self.kind == "layer":
            y = y - y.mean(dim=1, keepdim=True)
        y = y * torch.rsqrt(y.pow(2).mean(dim=1, keepdim=True) + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


class Conv3d(nn.Conv3d):
    """nn.Conv3d that runs fp32 inference on CPU through oneDNN.

    PyTorch sends a batch-1 fp32 convolution with a small input (N*C*T*H under 20480, the lone first frame
    and every streamed chunk here) to its reference kernel, which measured 1.4-6x slower than oneDNN on
    these shapes; results agree to ~1e-5. Training (autograd) and autocast keep PyTorch's own choice.
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
                and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)):
            return torch.ops.aten.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias, self.padding,
                                                     self.stride, self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


class ChunkCausalConv3d(Conv3d):
    """A 3D convolution whose temporal padding follows chunk causality (past chunk's tail left, zeros right)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size,
                         padding=(0, kernel_size // 2, kernel_size // 2), groups=groups, bias=bias)
        self.time_pad = kernel_size // 2

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        if self.time_pad:
            x = cache.pad_time(self, x, self.time_pad)
        return super().forward(x)


class PointwiseConv(Conv3d):
    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)


class ResBlock(nn.Module):
    """conv-act-conv-norm plus identity: the high-resolution block."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = ChunkCausalConv3d(channels, channels)
        self.conv2 = ChunkCausalConv3d(channels, channels)
        self.norm = ChannelNorm(channels, norm)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return x + self.norm(self.conv2(F.silu(self.conv1(x, cache)), cache))


class GLUMBConv(nn.Module):
    """Inverted bottleneck with a gated depthwise 3x3x3 conv (GLU-MBConv) plus identity."""

    def __init__(self, channels: int, norm: str, expand_ratio: float):
        super().__init__()
        hidden = int(round(channels * expand_ratio))
        self.inverted = PointwiseConv(channels, 2 * hidden)
        self.depthwise = ChunkCausalConv3d(2 * hidden, 2 * hidden, groups=2 * hidden)
        self.point = PointwiseConv(hidden, channels, bias=False)
        self.norm = ChannelNorm(channels, norm)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        value, gate = self.depthwise(F.silu(self.inverted(x)), cache).chunk(2, dim=1)
        return x + self.norm(self.point(value * F.silu(gate)))


class FrameLinearAttention(nn.Module):
    """Multi-head ReLU linear attention over the positions of each frame (no mixing in time), plus identity."""

    def __init__(self, channels: int, norm: str, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.head_dim, self.eps = head_dim, eps
        self.qkv = PointwiseConv(channels, 3 * channels, bias=False)
        self.proj = PointwiseConv(channels, channels, bias=False)
        self.norm = ChannelNorm(channels, norm)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        n, c, t, h, w = x.shape
        qkv = rearrange(self.qkv(x), "n (s m d) t h w -> s (n t) m (h w) d", s=3, d=self.head_dim)
        q, k, v = qkv.float().unbind(0)  # fp32: the sums over all positions overflow bf16's precision
        q, k = F.relu(q), F.relu(k)
        numerator = q @ (k.transpose(-1, -2) @ v)
        denominator = q @ k.sum(dim=2, keepdim=True).transpose(-1, -2)
        out = (numerator / (denominator + self.eps)).to(x.dtype)
        out = rearrange(out, "(n t) m (h w) d -> n (m d) t h w", n=n, h=h)
        return x + self.norm(self.proj(out))


class EfficientViTBlock(nn.Module):
    """Frame linear attention for global context, then GLU-MBConv for local: the low-resolution block."""

    def __init__(self, channels: int, norm: str, expand_ratio: float, head_dim: int):
        super().__init__()
        self.attention = FrameLinearAttention(channels, norm, head_dim)
        self.local = GLUMBConv(channels, norm, expand_ratio)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return self.local(self.attention(x, cache), cache)


class DownBlock(nn.Module):
    """2x down in space (and in time when time_factor=2): conv then pack, plus pack-and-average shortcut."""

    def __init__(self, in_channels: int, out_channels: int, time_factor: int, space_factor: int = 2):
        super().__init__()
        self.time_factor, self.space_factor = time_factor, space_factor
        packed = time_factor * space_factor ** 2
        self.conv = ChunkCausalConv3d(in_channels, out_channels // packed)
        self.group = in_channels * packed // out_channels
        self.out_channels = out_channels

    def pack(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return pack_time_space(x, self.time_factor, self.space_factor, cache.first_frame)

    def shortcut(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return average_channels(self.pack(x, cache), self.out_channels)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return self.pack(self.conv(x, cache), cache) + self.shortcut(x, cache)


class UpBlock(nn.Module):
    """2x up in space (and in time when time_factor=2): conv to `packed` times the channels then unpack
    (a learned pixel shuffle), plus a duplicate-and-unpack shortcut. A 1x1x1 kernel (the default)
    costs 27x less than 3x3x3 and leaves spatial and temporal mixing to the blocks around it."""

    def __init__(self, in_channels: int, out_channels: int, time_factor: int, space_factor: int = 2,
                 kernel_size: int = 1):
        super().__init__()
        self.time_factor, self.space_factor = time_factor, space_factor
        packed = time_factor * space_factor ** 2
        self.conv = ChunkCausalConv3d(in_channels, out_channels * packed, kernel_size)
        self.repeats = out_channels * packed // in_channels

    def unpack(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return unpack_time_space(x, self.time_factor, self.space_factor, cache.first_frame)

    def shortcut(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return self.unpack(x.repeat_interleave(self.repeats, dim=1), cache)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        y = self.conv(x, cache)
        if cache.first_frame and self.time_factor > 1:  # the unpack averages: keep each path's own mean
            return self.unpack(y, cache) + self.shortcut(x, cache)
        # unpack(y) + unpack(x repeated) == unpack(y + x broadcast over the repeats), bit for bit, in one
        # reshuffle of the large (upsampled) tensor instead of three
        y = (y.unflatten(1, (x.shape[1], self.repeats)) + x.unsqueeze(2)).flatten(1, 2)
        return self.unpack(y, cache)


class ToLatent(nn.Module):
    """The encoder's last op: norm-act-conv to the latent channels, plus a channel-averaging shortcut."""

    def __init__(self, in_channels: int, latent_channels: int, norm: str):
        super().__init__()
        self.norm = ChannelNorm(in_channels, norm)
        self.conv = ChunkCausalConv3d(in_channels, latent_channels)
        self.latent_channels = latent_channels

    def shortcut(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return average_channels(x, self.latent_channels)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)), cache) + self.shortcut(x, cache)


class FromLatent(nn.Module):
    """The decoder's first op: conv from the latent channels, plus a channel-duplicating shortcut."""

    def __init__(self, latent_channels: int, out_channels: int):
        super().__init__()
        self.conv = ChunkCausalConv3d(latent_channels, out_channels)
        self.repeats = out_channels // latent_channels

    def shortcut(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return x.repeat_interleave(self.repeats, dim=1)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return self.conv(x, cache) + self.shortcut(x, cache)


class ToPixels(nn.Module):
    """The decoder's last op: norm-act-conv to RGB."""

    def __init__(self, in_channels: int, norm: str, out_channels: int = 3):
        super().__init__()
        self.norm = ChannelNorm(in_channels, norm)
        self.conv = ChunkCausalConv3d(in_channels, out_channels)

    def forward(self, x: torch.Tensor, cache: ChunkCache) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)), cache)


def average_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Mean over groups of adjacent channels: (N, g*out, ...) -> (N, out, ...)."""
    return x.unflatten(1, (out_channels, x.shape[1] // out_channels)).mean(dim=2)


def build_block(kind: str, channels: int, norm: str, expand_ratio: float, head_dim: int) -> nn.Module:
    if kind == "res":
        return ResBlock(channels, norm)
    if kind == "glu_mbconv":
        return GLUMBConv(channels, norm, expand_ratio)
    if kind == "linear_attn":
        return EfficientViTBlock(channels, norm, expand_ratio, head_dim)
    raise ValueError(f"unknown block kind {kind}")


BLOCK_KINDS = ("res", "glu_mbconv", "linear_attn")
