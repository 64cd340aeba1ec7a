"""diffusers SANA-Video / Wan transformers -> reel DiT folders and back: the same outputs, exact round trips,
and one-line errors naming what does not map."""
import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from reel.config.schema import ModelConfig, ReelConfig
from reel.errors import ReelError
from reel.interop.diffusers_dit import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, convert_from_diffusers, \
    convert_to_diffusers
from reel.models.dit import build_dit
from reel.models.dit_checkpoint import load_dit, read_dit_extra_info, save_dit

LATENT_CHANNELS, TEXT_DIM = 4, 16
TOLERANCE = 1e-4  # max abs difference in fp32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors are tiny: on a busy CPU, extra OpenMP threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def diffusers_class(kind: str):
    from diffusers import SanaVideoTransformer3DModel, WanTransformer3DModel

    return SanaVideoTransformer3DModel if kind == "sana_video" else WanTransformer3DModel


# tiny models the way diffusers' own tests build them; `sana_video_variant` has q/k/v biases and no QK-norm
CASES = {
    "sana_video": ("sana_video", dict(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=12,
        num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24,
        caption_channels=TEXT_DIM, mlp_ratio=2.5, patch_size=(1, 2, 2), sample_size=8)),
    "sana_video_variant": ("sana_video", dict(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
        num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
        caption_channels=TEXT_DIM, mlp_ratio=3.0, patch_size=(1, 1, 1), sample_size=8, attention_bias=True,
        qk_norm=None)),
    "wan": ("wan", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=48, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)),
}


def randomise(model, seed: int = 0):
    """Every weight random, the zero-initialised ones included, so no mapping hides behind a zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_((0.2 if p.dim() > 1 else 0.1) * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """case -> (kind, diffusers model, its save_pretrained folder)."""
    built = {}
    for case, (kind, config) in CASES.items():
        model = randomise(diffusers_class(kind)(**config))
        folder = tmp_path_factory.mktemp(case)
        model.save_pretrained(folder)
        built[case] = kind, model, folder
    return built


def inputs(patch_size=(1, 2, 2)):
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, LATENT_CHANNELS, 3 * patch_size[0], 4 * patch_size[1], 4 * patch_size[2], generator=g)
    t = torch.rand(2, generator=g)
    text = torch.randn(2, 7, TEXT_DIM, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    return latents, t, text, mask


@torch.no_grad()
def diffusers_output(kind, model, latents, t, text, mask):
    if kind == "wan":  # Wan takes no text mask
        return model(latents, t * 1000, text, return_dict=False)[0]
    return model(latents, text, t * 1000, encoder_attention_mask=mask.float(), return_dict=False)[0]


@torch.no_grad()
def reel_output(kind, dit, latents, t, text, mask):
    return dit(latents, t, text, mask if kind == "sana_video" else None)


def load_in_diffusers(kind, folder, monkeypatch):
    cls = diffusers_class(kind)
    # without `accelerate` (not installed here) diffusers refuses to load a class that keeps modules in fp32
    monkeypatch.setattr(cls, "_keep_in_fp32_modules", None)
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    return model.eval()


@pytest.mark.parametrize("case", list(CASES))
def test_converted_dit_computes_what_diffusers_computes(sources, tmp_path, case):
    kind, model, folder = sources[case]
    convert_from_diffusers(kind, folder, tmp_path / "dit")
    dit, cfg = load_dit(tmp_path / "dit")
    args = inputs(tuple(cfg.model.patch_size))
    expected = diffusers_output(kind, model, *args)
    difference = (reel_output(kind, dit, *args) - expected).abs().max().item()
    assert difference <= TOLERANCE, f"{case}: max abs difference {difference:.2e}"
    assert cfg.dit.latent_channels == LATENT_CHANNELS and cfg.text_encoder.dim == TEXT_DIM
    assert cfg.autoencoder.name == "wan2.1-vae" and cfg.autoencoder.checkpoint is None
    assert cfg.text_encoder.name == ("gemma-2-2b-it" if kind == "sana_video" else "umt5-xxl")
    assert read_dit_extra_info(tmp_path / "dit")["diffusers_class"] == type(model).__name__


@pytest.mark.parametrize("case", ["sana_video", "wan"])
def test_sharded_sources_convert_the_same(sources, tmp_path, case):
    kind, model, folder = sources[case]
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / INDEX_FILE).is_file() and len(list((tmp_path / "sharded").glob("*.safetensors"))) > 2
    convert_from_diffusers(kind, folder, tmp_path / "whole")
    convert_from_diffusers(kind, tmp_path / "sharded", tmp_path / "from_shards")
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    shards = load_file(tmp_path / "from_shards" / "model.safetensors")
    assert whole.keys() == shards.keys() and all(torch.equal(whole[k], shards[k]) for k in whole)


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_is_exact_and_loads_in_diffusers(sources, tmp_path, monkeypatch, case):
    kind, model, folder = sources[case]
    convert_from_diffusers(kind, folder, tmp_path / "dit")
    convert_to_diffusers(tmp_path / "dit", tmp_path / "back")
    source, back = load_file(folder / WEIGHTS_FILE), load_file(tmp_path / "back" / WEIGHTS_FILE)
    assert source.keys() == back.keys()
    for name, tensor in source.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    assert json.loads((tmp_path / "back" / CONFIG_FILE).read_text()) == json.loads((folder / CONFIG_FILE).read_text())
    reloaded = load_in_diffusers(kind, tmp_path / "back", monkeypatch)
    args = inputs(tuple(CASES[case][1]["patch_size"]))
    torch.testing.assert_close(diffusers_output(kind, reloaded, *args), diffusers_output(kind, model, *args),
                               atol=0, rtol=0)


def test_bf16_weights_stay_bf16_both_ways(sources, tmp_path):
    kind, _, folder = sources["wan"]
    to_bf16 = lambda tensors: tensors.update({k: v.bfloat16() for k, v in tensors.items()})  # noqa: E731
    bf16 = _edited_copy(folder, tmp_path / "bf16", edit_tensors=to_bf16)
    convert_from_diffusers(kind, bf16, tmp_path / "dit")
    assert {t.dtype for t in load_file(tmp_path / "dit" / "model.safetensors").values()} == {torch.bfloat16}
    convert_to_diffusers(tmp_path / "dit", tmp_path / "back")
    source, back = load_file(bf16 / WEIGHTS_FILE), load_file(tmp_path / "back" / WEIGHTS_FILE)
    assert source.keys() == back.keys() and all(torch.equal(source[k], back[k]) for k in source)


def _edited_copy(folder, out, edit_tensors=None, edit_config=None):
    shutil.copytree(folder, out)
    if edit_tensors:
        tensors = load_file(out / WEIGHTS_FILE)
        edit_tensors(tensors)
        save_file(tensors, str(out / WEIGHTS_FILE))
    if edit_config:
        config = json.loads((out / CONFIG_FILE).read_text())
        edit_config(config)
        (out / CONFIG_FILE).write_text(json.dumps(config))
    return out


def _one_line_error(match, call, *args):
    with pytest.raises(ReelError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case,extra,missing", [
    ("sana_video", "transformer_blocks.0.attn1.norm_added_q.weight", "transformer_blocks.1.ff.conv_temp.weight"),
    ("wan", "blocks.1.attn2.add_k_proj.weight", "blocks.0.attn1.to_k.bias"),
])
def test_a_left_over_or_missing_tensor_is_named(sources, tmp_path, case, extra, missing):
    kind, _, folder = sources[case]
    extra_copy = _edited_copy(folder, tmp_path / "extra", edit_tensors=lambda t: t.update({extra: torch.ones(3)}))
    _one_line_error(f"diffusers tensor {extra} maps onto nothing", convert_from_diffusers, kind, extra_copy,
                    tmp_path / "out")
    missing_copy = _edited_copy(folder, tmp_path / "missing", edit_tensors=lambda t: t.pop(missing))
    _one_line_error(f"diffusers tensor {missing} is missing", convert_from_diffusers, kind, missing_copy,
                    tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case,key,value", [
    ("wan", "image_dim", 8), ("wan", "freq_dim", 128), ("sana_video", "guidance_embeds", True),
    ("sana_video", "norm_elementwise_affine", True), ("sana_video", "num_cross_attention_heads", 3),
])
def test_source_options_reel_lacks_are_named(sources, tmp_path, case, key, value):
    kind, _, folder = sources[case]
    copy = _edited_copy(folder, tmp_path / "src", edit_config=lambda c: c.update({key: value}))
    _one_line_error(f"{key}={value}: ", convert_from_diffusers, kind, copy, tmp_path / "out")


def test_wrong_kind_or_folder_is_named(sources, tmp_path):
    _one_line_error("_class_name=SanaVideoTransformer3DModel: kind=wan reads WanTransformer3DModel",
                    convert_from_diffusers, "wan", sources["sana_video"][2], tmp_path / "out")
    _one_line_error("kind=flux: must be one of sana_video, wan", convert_from_diffusers, "flux",
                    sources["wan"][2], tmp_path / "out")
    _one_line_error("no such folder", convert_from_diffusers, "wan", tmp_path / "none", tmp_path / "out")


@pytest.mark.parametrize("overrides,named", [
    ({}, "model.mixffn_temporal=depthwise"),  # reel's default DiT
    (dict(ffn="mlp", attention="softmax", qkv_bias=True, caption_norm=False, causal_chunk=1), "model.causal_chunk=1"),
    (dict(ffn="mlp", attention="linear", qkv_bias=True, caption_norm=False), "model.attention=linear"),
    (dict(mixffn_temporal="dense", caption_norm=True, qk_norm_eps=1e-5), "model.linear_attention_eps=1e-06"),
])
def test_reel_configs_that_do_not_map_are_named(tmp_path, overrides, named):
    model_cfg = ModelConfig(hidden_size=24, depth=2, num_heads=2, **overrides)
    cfg = OmegaConf.structured(ReelConfig)
    cfg.model = OmegaConf.structured(model_cfg)
    save_dit(build_dit(model_cfg, LATENT_CHANNELS, TEXT_DIM), tmp_path / "dit", cfg)
    _one_line_error(named, convert_to_diffusers, tmp_path / "dit", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind,options", [
    ("wan", dict(ffn="mlp", attention="softmax", qkv_bias=True, caption_norm=False, cross_attention_norm=True,
                 mlp_ratio=2.0)),
    ("sana_video", dict(mixffn_temporal="dense", qk_norm_eps=1e-5, linear_attention_eps=1e-15, mlp_ratio=2.5)),
])
def test_a_reel_trained_dit_exports_to_diffusers(tmp_path, monkeypatch, kind, options):
    model_cfg = ModelConfig(hidden_size=24, depth=2, num_heads=2, patch_size=[1, 2, 2], **options)
    cfg = OmegaConf.structured(ReelConfig)
    cfg.model = OmegaConf.structured(model_cfg)
    dit = randomise(build_dit(model_cfg, LATENT_CHANNELS, TEXT_DIM), seed=3)
    save_dit(dit, tmp_path / "dit", cfg)
    convert_to_diffusers(tmp_path / "dit", tmp_path / "out")
    args = inputs()
    expected = reel_output(kind, dit, *args)
    difference = (diffusers_output(kind, load_in_diffusers(kind, tmp_path / "out", monkeypatch), *args) - expected)
    assert difference.abs().max().item() <= TOLERANCE


def test_reel_convert_command(sources, tmp_path, capsys):
    import reel.cli

    folder = sources["wan"][2]
    assert reel.cli.run(["convert", "from=diffusers", "kind=wan", f"src={folder}", f"out={tmp_path / 'dit'}"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["config.yaml", "model.safetensors"]
    assert reel.cli.run(["convert", "to=diffusers", f"checkpoint={tmp_path / 'dit'}", f"out={tmp_path / 'back'}"]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "WanTransformer3DModel"
    back = load_file(tmp_path / "back" / WEIGHTS_FILE)
    assert all(torch.equal(back[k], v) for k, v in load_file(folder / WEIGHTS_FILE).items())
    _one_line_error("from=hf: must be one of diffusers", reel.cli.run,
                    ["convert", "from=hf", "kind=wan", f"src={folder}", f"out={tmp_path / 'x'}"])
    _one_line_error("needs from=diffusers", reel.cli.run, ["convert", f"out={tmp_path / 'x'}"])
