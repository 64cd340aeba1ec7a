"""3D RoPE: scores depend on relative positions only, so chunks placed later in a long video behave alike."""
import pytest
import torch

from reel.models.rope import Rope3D, apply_rope, default_axes_dim, grid_positions
from dit_helpers import one_thread  # noqa: F401


def rotated(x, positions, rope):
    return apply_rope(x, *rope(positions))


def test_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = Rope3D(32)
    q, k = torch.randn(2, 32), torch.randn(2, 32)
    p_q, p_k = torch.tensor([[3, 1, 4]]), torch.tensor([[1, 5, 2]])
    score = (rotated(q, p_q, rope) * rotated(k, p_k, rope)).sum(-1)
    for shift in ([7, 0, 0], [0, 2, 3], [1000, 9, 11]):
        shift = torch.tensor([shift])
        shifted = (rotated(q, p_q + shift, rope) * rotated(k, p_k + shift, rope)).sum(-1)
        torch.testing.assert_close(shifted, score, atol=1e-4, rtol=1e-4)
    moved = (rotated(q, p_q + torch.tensor([[1, 0, 0]]), rope) * rotated(k, p_k, rope)).sum(-1)
    assert (moved - score).abs().max() > 1e-3  # and the relative position does matter, on each axis


def test_each_axis_rotates_its_own_channels():
    torch.manual_seed(0)
    rope = Rope3D(64)
    assert rope.axes_dim == default_axes_dim(64) == (24, 20, 20)
    x = torch.randn(1, 64)
    moved_in_time = rotated(x, torch.tensor([[5, 0, 0]]), rope) - x
    assert moved_in_time[:, 24:].abs().max() == 0 and moved_in_time[:, :24].abs().max() > 0
    moved_in_width = rotated(x, torch.tensor([[0, 0, 5]]), rope) - x
    assert moved_in_width[:, :44].abs().max() == 0 and moved_in_width[:, 44:].abs().max() > 0


def test_rotation_keeps_norms_and_leaves_unrotated_channels():
    torch.manual_seed(0)
    rope = Rope3D(16, axes_dim=(4, 4, 4))
    x = torch.randn(3, 5, 16)
    positions = grid_positions(1, 1, 5, frame_offset=2)
    y = apply_rope(x, *rope(positions))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(y[..., 12:], x[..., 12:])
    assert torch.equal(apply_rope(x, *rope(torch.zeros(5, 3, dtype=torch.long))), x)


def test_grid_positions_are_frames_first_with_offset():
    positions = grid_positions(2, 2, 3, frame_offset=10)
    assert positions.shape == (12, 3)
    assert positions[0].tolist() == [10, 0, 0] and positions[1].tolist() == [10, 0, 1]
    assert positions[6].tolist() == [11, 0, 0] and positions[-1].tolist() == [11, 1, 2]


def test_bad_axes_are_rejected():
    with pytest.raises(ValueError):
        Rope3D(16, axes_dim=(6, 6, 6))
    with pytest.raises(ValueError):
        Rope3D(16, axes_dim=(3, 4, 4))
