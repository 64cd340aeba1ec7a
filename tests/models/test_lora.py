"""LoRA adapters on the DiT: identity at start, only adapters train, merging equals the unmerged hooks,
the EMA copy carries its own adapters, LoRA folders round trip."""
import copy

import pytest
import torch
from safetensors.torch import load_file

from dit_helpers import tiny_dit, tiny_inputs
from reel.errors import ReelError
from reel.models.lora import add_lora, lora_state_dict, merged_state_dict
from reel.models.lora_checkpoint import apply_lora, save_lora


def randomise_adapters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in model.lora.values():
            adapter.B.copy_(torch.randn(adapter.B.shape, generator=g) * 0.1)


def test_adapters_start_as_the_identity_and_only_they_train():
    inputs = tiny_inputs()
    model = tiny_dit()
    before = model(*inputs)
    add_lora(model, rank=4, alpha=8)
    assert torch.equal(model(*inputs), before)  # B = 0
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("lora.") for name in trainable)
    assert len(model.lora) == 2 * 7  # 2 blocks x (qkv, out, cross q, kv, out, ffn expand, project)
    model(*inputs).square().mean().backward()
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("lora."))
    assert any(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if name.endswith(".B"))


def test_merged_weights_equal_the_unmerged_adapters():
    inputs = tiny_inputs()
    model = add_lora(tiny_dit(), rank=3, alpha=6, targets=["*.attn.qkv", "*.ffn.*"])
    randomise_adapters(model)
    unmerged = model(*inputs)
    assert not torch.allclose(unmerged, tiny_dit()(*inputs))
    merged = tiny_dit()
    merged.load_state_dict(merged_state_dict(model))
    torch.testing.assert_close(merged(*inputs), unmerged, rtol=1e-5, atol=1e-5)


def test_a_deep_copy_runs_its_own_adapters():
    inputs = tiny_inputs()
    model = add_lora(tiny_dit(), rank=2)
    ema = copy.deepcopy(model)
    randomise_adapters(model)
    assert torch.equal(ema(*inputs), tiny_dit()(*inputs))  # the copy's B is still zero


def test_lora_folder_round_trip_and_scale(tmp_path):
    inputs = tiny_inputs()
    model = add_lora(tiny_dit(), rank=2, alpha=4)
    randomise_adapters(model)
    save_lora(model, tmp_path / "lora", base="some/base")
    assert set(load_file(str(tmp_path / "lora" / "lora.safetensors"))) == set(lora_state_dict(model))
    again = apply_lora(tiny_dit(), tmp_path / "lora")
    assert torch.equal(again(*inputs), model(*inputs))
    off = apply_lora(tiny_dit(), tmp_path / "lora", scale=0.0)
    assert torch.equal(off(*inputs), tiny_dit()(*inputs))


def test_bad_targets_and_rank_are_errors():
    with pytest.raises(ReelError, match="matches no linear layer"):
        add_lora(tiny_dit(), rank=2, targets=["*.nothing"])
    with pytest.raises(ReelError, match="train.lora.rank=0"):
        add_lora(tiny_dit(), rank=0)
