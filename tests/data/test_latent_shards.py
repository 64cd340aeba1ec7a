"""Latent shard folders: written atomically, read back exactly, refused when incomplete or mismatched."""
import json

import pytest
import torch

from reel.data.latent_shards import INDEX_FILE, LatentShardDataset, LatentShardWriter, check_shards_match
from reel.errors import ReelError


def _write(folder, count=10, shard_size=4):
    writer = LatentShardWriter(folder, shard_size)
    latents, emb = torch.randn(count, 2, 3, 4, 4), torch.randn(count, 5, 6)
    mask = torch.arange(5).expand(count, 5) < torch.arange(1, count + 1).clamp(max=5)[:, None]
    for start in range(0, count, 3):
        end = min(start + 3, count)
        writer.add(latents[start:end], emb[start:end], mask[start:end],
                   [{"caption": f"clip {i}", "shape": "circle"} for i in range(start, end)])
    writer.close({"clip_size": [32, 32, 9], "autoencoder_identity": "ae-1", "text_encoder_identity": "te-1"})
    return latents, emb, mask


def test_round_trip(tmp_path):
    latents, emb, mask = _write(tmp_path)
    dataset = LatentShardDataset(tmp_path, max_shards_in_memory=1)
    assert len(dataset) == 10 and [s["count"] for s in dataset.index["shards"]] == [4, 4, 2]
    for i in (0, 5, 9, 4):  # across shards, with the shard cache evicting
        item = dataset[i]
        assert torch.equal(item["latents"], latents[i]) and torch.equal(item["text_mask"], mask[i])
        torch.testing.assert_close(item["text_emb"], emb[i].half().float())
        assert item["caption"] == f"clip {i}"
    assert {b.shape for b in dataset.bucket_of} == {(32, 32, 9)}


def test_incomplete_folders_are_refused(tmp_path):
    _write(tmp_path)
    (tmp_path / "shard_00001.safetensors").unlink()
    with pytest.raises(ReelError, match="shard_00001.safetensors is missing"):
        LatentShardDataset(tmp_path)
    LatentShardWriter(tmp_path)  # a new encode into the folder drops the old index first
    with pytest.raises(ReelError, match="no index.json"):
        LatentShardDataset(tmp_path)


def test_mismatched_encoders_are_refused(tmp_path):
    _write(tmp_path)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    check_shards_match(index, "ae-1", "te-1", tmp_path)
    with pytest.raises(ReelError, match="encoded with autoencoder"):
        check_shards_match(index, "ae-2", "te-1", tmp_path)
    with pytest.raises(ReelError, match="text embeddings from te-1"):
        check_shards_match(index, "ae-1", "te-2", tmp_path)
