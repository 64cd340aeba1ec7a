"""Text encoders load offline from local folders, and their cache never re-encodes a prompt."""
import os
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from reel.config.schema import TextEncoderConfig
from reel.errors import ReelError
from reel.models.text_cache import CachedTextEncoder, EmbeddingCache
from reel.models.text_encoder import TextEmbeddings, TextEncoder, bundled_minilm_path, build_text_encoder

PROMPTS = ["a red square", "a blue triangle bouncing slowly from the left edge of the frame to the right edge while a green circle waits", ""]
TOKENIZER_FILES = ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def minilm(offline):
    return TextEncoder(max_length=16, name="minilm")


@pytest.fixture
def model_calls(minilm, monkeypatch):
    """How many times the MiniLM network itself ran, counted at its forward."""
    calls = []
    original = minilm.model.forward

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(minilm.model, "forward", counting_forward)
    return calls


def _save_tiny_model(folder, model):
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:  # reuse MiniLM's WordPiece tokenizer; the vocabularies match
        shutil.copy(os.path.join(bundled_minilm_path(), name), folder)
    return str(folder)


def _tiny_t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))


def _tiny_t5_full():
    from transformers import T5Config, T5Model

    config = T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1, num_heads=4)
    return T5Model(config)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaModel(config)


TINY_MODELS = {"t5-encoder": _tiny_t5_encoder, "t5-encoder-decoder": _tiny_t5_full, "llama-decoder": _tiny_llama}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory, offline):
    torch.manual_seed(0)
    return {kind: _save_tiny_model(tmp_path_factory.mktemp(kind), build()) for kind, build in TINY_MODELS.items()}


def _token_counts(encoder, prompts):
    return [min(len(encoder.tokenizer(p)["input_ids"]), encoder.max_length) for p in prompts]


# --- the bundled MiniLM -------------------------------------------------------------------


def test_minilm_loads_offline_with_expected_shapes(minilm):
    out = minilm.encode(PROMPTS)
    assert isinstance(out, TextEmbeddings)
    assert out.embeddings.shape == (3, 16, 384) and out.embeddings.dtype == torch.float32
    assert out.mask.shape == (3, 16) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (3, 384) and out.pooled.dtype == torch.float32
    assert minilm.dim == 384
    counts = _token_counts(minilm, PROMPTS)
    assert out.mask.sum(dim=1).tolist() == counts
    assert counts[0] < counts[1] == 16  # the long prompt is truncated, the short one padded
    for row, count in enumerate(counts):  # real tokens first, padding after
        assert out.mask[row, :count].all() and not out.mask[row, count:].any()


def test_pooled_is_mean_of_real_tokens_and_padding_changes_nothing(minilm):
    prompt = PROMPTS[0]
    padded = minilm.encode([prompt])
    unpadded_tokens = minilm.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        unpadded = minilm.model(**unpadded_tokens).last_hidden_state[0]
    count = unpadded.shape[0]
    torch.testing.assert_close(padded.embeddings[0, :count], unpadded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.pooled[0], unpadded.mean(dim=0), atol=1e-5, rtol=1e-5)


def test_different_prompts_differ_and_same_prompt_is_deterministic(minilm):
    first = minilm.encode(PROMPTS)
    again = minilm.encode(PROMPTS)
    assert torch.equal(first.embeddings, again.embeddings) and torch.equal(first.pooled, again.pooled)
    assert not torch.allclose(first.pooled[0], first.pooled[1], atol=1e-3)


def test_batching_keeps_the_order(minilm, monkeypatch):
    whole = minilm.encode(PROMPTS)
    monkeypatch.setattr(minilm, "batch_size", 2)
    split = minilm.encode(PROMPTS)
    torch.testing.assert_close(split.embeddings, whole.embeddings, atol=1e-5, rtol=1e-5)
    assert torch.equal(split.mask, whole.mask)


def test_encoder_is_frozen_and_stays_in_eval(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.model.training
    assert minilm.encode(["x"]).embeddings.grad_fn is None


def test_empty_prompt_list_gives_an_empty_batch(minilm):
    out = minilm.encode([])
    assert out.embeddings.shape == (0, 16, 384) and out.mask.shape == (0, 16) and out.pooled.shape == (0, 384)


@pytest.mark.parametrize("prompts", ["a bare string", ["ok", 3], [None]])
def test_prompts_that_are_not_strings_are_rejected(minilm, prompts):
    with pytest.raises(ReelError, match="prompt"):
        minilm.encode(prompts)


# --- errors a person can cause --------------------------------------------------------------


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ReelError, match=f"text_encoder.path={missing}: no such folder"):
        TextEncoder(path=str(missing))


def test_folder_without_a_model_cannot_load(tmp_path):
    (tmp_path / "README.md").write_text("not a model\n")
    with pytest.raises(ReelError, match="cannot load a transformers encoder") as caught:
        TextEncoder(path=str(tmp_path))
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)


def test_expected_dim_mismatch_names_the_key(tiny_folders):
    with pytest.raises(ReelError, match="text_encoder.dim=768 but the encoder at .* gives 32-d embeddings"):
        TextEncoder(path=tiny_folders["t5-encoder"], expected_dim=768)


def test_max_length_beyond_the_position_table_is_rejected(tiny_folders):
    with pytest.raises(ReelError, match="text_encoder.max_length=100"):
        TextEncoder(path=tiny_folders["llama-decoder"], max_length=100)


# --- any local transformers folder --------------------------------------------------------


@pytest.mark.parametrize("kind", list(TINY_MODELS))
def test_any_local_transformers_folder_loads_by_path(tiny_folders, kind):
    encoder = TextEncoder(path=tiny_folders[kind], max_length=12)
    out = encoder.encode(PROMPTS)
    assert out.embeddings.shape == (3, 12, 32) and encoder.dim == 32
    assert out.mask.sum(dim=1).tolist() == _token_counts(encoder, PROMPTS)
    assert torch.isfinite(out.embeddings).all()
    assert not torch.allclose(out.pooled[0], out.pooled[1])
    assert torch.equal(out.embeddings, encoder.encode(PROMPTS).embeddings)


def test_encoder_decoder_folder_runs_only_the_encoder(tiny_folders):
    encoder = TextEncoder(path=tiny_folders["t5-encoder-decoder"], max_length=12)
    assert not any("decoder" in name for name, _ in encoder.model.named_parameters())


def test_identity_follows_settings_and_weight_files(tiny_folders, tmp_path):
    folder = shutil.copytree(tiny_folders["t5-encoder"], tmp_path / "t5")
    base = TextEncoder(path=str(folder), max_length=12).identity
    assert TextEncoder(path=str(folder), max_length=12).identity == base
    assert TextEncoder(path=str(folder), max_length=8).identity != base
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert TextEncoder(path=str(folder), max_length=12).identity != base


def test_build_text_encoder_from_config(tiny_folders, tmp_path):
    cfg = OmegaConf.structured(TextEncoderConfig)
    cfg.path, cfg.name, cfg.max_length, cfg.dim = tiny_folders["t5-encoder"], "local", 12, 32
    cfg.cache_dir = str(tmp_path / "cache")
    cached = build_text_encoder(cfg)
    assert isinstance(cached, CachedTextEncoder) and cached.dim == 32 and cached.max_length == 12
    assert cached.encode(PROMPTS).embeddings.shape == (3, 12, 32)
    cfg.cache_dir = None
    assert isinstance(build_text_encoder(cfg), TextEncoder)


# --- the embedding cache --------------------------------------------------------------------


def test_second_encode_makes_no_model_call_and_is_bitwise_equal(minilm, model_calls, tmp_path):
    fresh = minilm.encode(PROMPTS)
    model_calls.clear()
    cached = CachedTextEncoder(minilm, str(tmp_path))
    first = cached.encode(PROMPTS)
    assert model_calls == [3] and cached.misses == 3 and cached.hits == 0
    for field in ("embeddings", "mask", "pooled"):
        assert torch.equal(getattr(first, field), getattr(fresh, field))

    again_in_memory = cached.encode(PROMPTS)
    from_disk = CachedTextEncoder(minilm, str(tmp_path)).encode(list(reversed(PROMPTS)))
    assert model_calls == [3] and cached.hits == 3
    for field in ("embeddings", "mask", "pooled"):
        assert torch.equal(getattr(again_in_memory, field), getattr(fresh, field))
        assert torch.equal(getattr(from_disk, field), getattr(fresh, field).flip(0))


def test_only_distinct_misses_are_encoded(minilm, model_calls, tmp_path):
    cached = CachedTextEncoder(minilm, str(tmp_path))
    cached.encode(["seen"])
    out = cached.encode(["new", "seen", "new"])
    assert model_calls == [1, 1] and cached.hits == 1 and cached.misses == 2
    assert torch.equal(out.embeddings[0], out.embeddings[2])


def test_a_new_encoder_identity_misses(minilm, tmp_path):
    cached = CachedTextEncoder(minilm, str(tmp_path))
    cached.encode(PROMPTS)
    assert cached.cache.get(PROMPTS)[1] == []
    other = EmbeddingCache(str(tmp_path), minilm.identity + "-other-max-length")
    hits, misses = other.get(PROMPTS)
    assert hits == {} and misses == PROMPTS


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupted_entry_is_re_encoded(minilm, model_calls, tmp_path, damage):
    fresh = CachedTextEncoder(minilm, str(tmp_path)).encode(PROMPTS)
    path = EmbeddingCache(str(tmp_path), minilm.identity).path_for(PROMPTS[1])
    data = open(path, "rb").read()
    damaged = {"garbage": b"\x00not safetensors" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    with open(path, "wb") as handle:
        handle.write(damaged)
    model_calls.clear()
    reader = CachedTextEncoder(minilm, str(tmp_path))
    out = reader.encode(PROMPTS)
    assert model_calls == [1] and reader.misses == 1 and reader.hits == 2
    assert torch.equal(out.embeddings, fresh.embeddings)
    assert reader.cache.read(PROMPTS[1]) is not None  # rewritten in place


def test_entries_are_written_atomically_without_leftovers(minilm, tmp_path):
    CachedTextEncoder(minilm, str(tmp_path)).encode(PROMPTS)
    names = [name for _, _, files in os.walk(tmp_path) for name in files]
    assert len([n for n in names if n.endswith(".safetensors")]) == 3
    assert not [n for n in names if n.endswith(".tmp")]


def test_precompute_fills_the_cache_once(minilm, model_calls, tmp_path):
    cached = CachedTextEncoder(minilm, str(tmp_path))
    assert cached.precompute(PROMPTS + PROMPTS[:1], progress=False) == 3
    assert cached.precompute(PROMPTS, progress=False) == 0
    calls_after_precompute = len(model_calls)
    CachedTextEncoder(minilm, str(tmp_path)).encode(PROMPTS)
    assert len(model_calls) == calls_after_precompute


def test_cached_encoder_accepts_an_empty_list_and_rejects_non_strings(minilm, tmp_path):
    cached = CachedTextEncoder(minilm, str(tmp_path))
    assert cached.encode([]).embeddings.shape == (0, 16, 384)
    with pytest.raises(ReelError):
        cached.encode([1])


def test_readers_never_see_a_half_written_entry(tmp_path):
    import threading

    cache = EmbeddingCache(str(tmp_path), "identity", shape=(64, 256))
    entry = (torch.randn(64, 256), torch.ones(64, dtype=torch.bool), torch.randn(256))
    cache.put("p", *entry)
    stop = threading.Event()

    def keep_writing():
        while not stop.is_set():
            cache.put("p", *entry)

    writers = [threading.Thread(target=keep_writing) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        reads = [cache.read("p") for _ in range(200)]
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert all(read is not None and torch.equal(read.embeddings, entry[0]) for read in reads)
