"""The lean Mix-FFN functions: same numbers as plain autograd, fewer saved activations."""
import pytest
import torch
import torch.nn.functional as F

from reel.models.fused_ffn import SiluDepthwiseConv2d, SiluGate
from reel.models.mixffn import MixFFN
from reel.models.tokens import TokenGrid


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("channels_last", [True, False])
def test_silu_depthwise_conv_matches_autograd(channels_last):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(6, 1, 3, 3), torch.randn(6)
    a = leaves(x, weight, bias)
    b = leaves(x, weight, bias)
    grad = torch.randn(3, 6, 5, 7)
    ref = F.conv2d(F.silu(a[0]), a[1], a[2], padding=1, groups=6)
    out = SiluDepthwiseConv2d.apply(b[0], b[1], b[2], 1)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    ref.backward(grad)
    out.backward(grad)
    for mine, theirs in zip(b, a):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-6, rtol=1e-6)


def test_silu_gate_matches_autograd():
    torch.manual_seed(0)
    z_ref, z = leaves(*[torch.randn(4, 5, 8)] * 2)
    value, gate = z_ref.chunk(2, dim=-1)
    ref = value * F.silu(gate)
    out = SiluGate.apply(z)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(z.grad, z_ref.grad, atol=1e-6, rtol=1e-6)


def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd keeps for backward while fn runs."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_mixffn_keeps_fewer_activations_than_plain_autograd(monkeypatch):
    import reel.models.mixffn as mixffn

    torch.manual_seed(0)
    layer = MixFFN(16, 2.5)
    grid = TokenGrid(4, 6, 6, 0, None, None, torch.device("cpu"))
    x = torch.randn(2, 4 * 6 * 6, 16, requires_grad=True)
    lean, out_lean = saved_bytes(lambda: layer(x, grid)), layer(x, grid)
    monkeypatch.setattr(mixffn, "fused_enabled", lambda _x: False)  # the plain path, as under autocast
    plain, out_plain = saved_bytes(lambda: layer(x, grid)), layer(x, grid)
    torch.testing.assert_close(out_lean, out_plain, atol=0, rtol=0)
    hidden_bytes = 2 * 4 * 6 * 6 * 40 * 4  # one (B, N, hidden) fp32 tensor
    assert plain - lean >= 3 * hidden_bytes, (plain, lean)
