"""Learning-rate schedule values and the resumable data loader (no DeepSpeed here)."""
import math

import pytest
import torch

from reel.errors import ReelError
from reel.train import ResumableLoader, warmup_then_decay
from tiny_run import GlobalBatchSampler, TinyDataset


def test_warmup_is_linear_and_cosine_ends_at_min_lr():
    steps, warmup, floor = 10, 4, 0.1
    values = [warmup_then_decay(u, steps, warmup, "cosine", floor) for u in range(steps)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0)  # decay starts from the peak
    assert values[-1] == pytest.approx(floor)  # the last step uses exactly min_lr_ratio * lr
    middle = 4 + (steps - warmup - 1) / 2
    assert warmup_then_decay(middle, steps, warmup, "cosine", floor) == pytest.approx((1 + floor) / 2)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert warmup_then_decay(100, steps, warmup, "cosine", floor) == pytest.approx(floor)


def test_constant_schedule_and_no_warmup():
    assert [warmup_then_decay(u, 10, 2, "constant") for u in range(5)] == pytest.approx([0.5, 1, 1, 1, 1])
    assert warmup_then_decay(0, 10, 0, "cosine", 0.0) == pytest.approx(1.0)
    assert warmup_then_decay(9, 10, 0, "cosine", 0.0) == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(warmup_then_decay(0, 1, 0, "cosine", 0.1))


def _take(loader, n):
    return [(epoch, batch["x"].clone()) for epoch, batch in (next(loader) for _ in range(n))]


def _loader(dataset, collate=None, workers=0, batch=4):
    return ResumableLoader(dataset, GlobalBatchSampler(len(dataset), batch, seed=3), collate, num_workers=workers)


def test_resume_skips_consumed_batches_without_reading_them():
    dataset = TinyDataset(24)  # 6 batches of 4 per epoch
    reference = _take(_loader(dataset), 9)

    first = _loader(TinyDataset(24))
    _take(first, 4)
    state = first.state_dict()
    assert state == {"epoch": 0, "batch": 4}

    fresh_dataset = TinyDataset(24)
    resumed = _loader(fresh_dataset)
    resumed.load_state_dict(state)
    rest = _take(resumed, 5)
    assert all(e1 == e2 and torch.equal(b1, b2) for (e1, b1), (e2, b2) in zip(reference[4:], rest))
    assert len(fresh_dataset.reads) == 5 * 4  # the 4 consumed batches were skipped by index, never read
    assert resumed.state_dict() == {"epoch": 1, "batch": 3}
    assert resumed.batch_sampler.epochs_set == [0, 1]  # set_epoch at every epoch


def test_empty_batches_are_skipped_and_still_advance_the_position():
    def collate(items):  # a batch holding sample 0 is "unreadable"
        if any(float(item["x"][0]) == float(dataset.x[0, 0]) for item in items):
            return None
        return torch.utils.data.default_collate(items)

    dataset = TinyDataset(24)
    loader = _loader(dataset, collate)
    batches = _take(loader, 5)  # one epoch has 6 batches, one of them holding sample 0
    assert all(not any(torch.equal(row, dataset.x[0]) for row in b) for _, b in batches)
    assert loader.empty_batches_skipped == 1
    assert loader.state_dict() == {"epoch": 0, "batch": 6}  # the skipped batch counts as taken


def test_worker_processes_give_the_same_stream_after_resume():
    reference = _take(_loader(TinyDataset(24)), 8)
    loader = _loader(TinyDataset(24), workers=2)
    loader.load_state_dict({"epoch": 0, "batch": 3})
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(reference[3:], _take(loader, 5)))


def test_bucket_sampler_resumes_across_epochs():
    buckets = pytest.importorskip("reel.data.buckets")
    shapes = [buckets.Bucket(32, 32, 1), buckets.Bucket(32, 64, 1)]
    bucket_of = [shapes[i % 2] for i in range(20)]

    def make():
        sampler = buckets.BucketBatchSampler(bucket_of, default_batch_size=3, seed=5)
        return ResumableLoader(TinyDataset(20), sampler)

    reference = _take(make(), 12)
    loader = make()
    _take(loader, 7)
    resumed = make()
    resumed.load_state_dict(loader.state_dict())
    assert all(e1 == e2 and torch.equal(a, b) for (e1, a), (e2, b) in zip(reference[7:], _take(resumed, 5)))


def test_a_sampler_without_batches_is_an_error():
    loader = ResumableLoader(TinyDataset(2), GlobalBatchSampler(2, 4))
    with pytest.raises(ReelError, match="no batches"):
        next(loader)


def test_stage0_optimizer_clips_by_global_norm_and_skips_nonfinite_gradients():
    from reel.train.deepspeed_engine import AdamWSkippingNonFinite

    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = AdamWSkippingNonFinite([weight], max_grad_norm=1.0, lr=0.1)
    weight.grad = torch.full((4,), 5.0)  # norm 10
    optimizer.step()
    assert optimizer._global_grad_norm == pytest.approx(10.0) and not optimizer.overflow
    assert float(weight.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    before = weight.detach().clone()
    weight.grad = torch.tensor([1.0, float("inf"), 0.0, 0.0])
    optimizer.step()
    assert optimizer.overflow and torch.equal(weight.detach(), before)
    assert int(optimizer.state[weight]["step"]) == 1  # the moments were not touched either
