import pytest

from reel.data.buckets import Bucket, BucketBatchSampler, assign_bucket, parse_bucket
from reel.errors import ReelError

SQUARE, WIDE, TALL = Bucket(64, 64, 9), Bucket(32, 64, 9, batch_size=3), Bucket(64, 32, 9)
BUCKETS = [SQUARE, WIDE, TALL]


def mixed_bucket_of(n_square=10, n_wide=7, n_tall=5):
    return [SQUARE] * n_square + [WIDE] * n_wide + [TALL] * n_tall


def test_parse_bucket_still_works():
    assert parse_bucket("64x112x17:8") == Bucket(64, 112, 17, 8)
    with pytest.raises(ReelError, match="data.buckets"):
        parse_bucket("64x17")


def test_assign_bucket_by_aspect_and_length():
    assert assign_bucket(64, 64, 20, BUCKETS) == SQUARE
    assert assign_bucket(64, 128, 20, BUCKETS) == WIDE
    assert assign_bucket(128, 64, 20, BUCKETS) == TALL
    assert assign_bucket(64, 64, 8, BUCKETS) is None
    long_and_short = [Bucket(64, 64, 5), Bucket(64, 64, 17)]
    assert assign_bucket(64, 64, 17, long_and_short) == Bucket(64, 64, 17)  # the most frames it can fill
    assert assign_bucket(64, 64, 16, long_and_short) == Bucket(64, 64, 5)


def test_batches_never_mix_shapes_and_honour_bucket_batch_sizes():
    bucket_of = mixed_bucket_of()
    sampler = BucketBatchSampler(bucket_of, default_batch_size=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 3 + 2  # ceil(10/4) + ceil(7/3) + ceil(5/4)
    for batch in batches:
        shapes = {bucket_of[i].shape for i in batch}
        assert len(shapes) == 1
        limit = 3 if shapes == {WIDE.shape} else 4
        assert len(batch) <= limit
    assert sorted(i for b in batches for i in b) == list(range(len(bucket_of)))


def test_drop_last_keeps_only_full_batches():
    bucket_of = mixed_bucket_of()
    batches = list(BucketBatchSampler(bucket_of, 4, drop_last=True))
    assert len(batches) == 2 + 2 + 1
    assert all(len(b) == (3 if bucket_of[b[0]] == WIDE else 4) for b in batches)


def test_shuffle_is_deterministic_per_epoch():
    bucket_of = mixed_bucket_of()
    a, b = BucketBatchSampler(bucket_of, 4, seed=7), BucketBatchSampler(bucket_of, 4, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    unshuffled = list(BucketBatchSampler(bucket_of, 4, shuffle=False))
    assert unshuffled[0] == [0, 1, 2, 3]


def test_data_parallel_shards_are_disjoint_and_equal_length():
    bucket_of = mixed_bucket_of(n_square=16, n_wide=9, n_tall=8)  # 4 + 3 + 2 = 9 full batches
    shards = [list(BucketBatchSampler(bucket_of, 4, drop_last=True, seed=3, num_replicas=3, rank=r))
              for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len(seen) == len(set(seen)) == len(bucket_of)


def test_padding_gives_every_rank_the_same_number_of_batches():
    bucket_of = mixed_bucket_of()  # 8 batches over 3 ranks -> 3 each, one repeated
    samplers = [BucketBatchSampler(bucket_of, 4, num_replicas=3, rank=r) for r in range(3)]
    shards = [list(s) for s in samplers]
    assert [len(s) for s in shards] == [len(s) for s in samplers] == [3, 3, 3]
    assert {i for shard in shards for batch in shard for i in batch} == set(range(len(bucket_of)))


def test_bad_rank_is_an_error():
    with pytest.raises(ReelError, match="rank"):
        BucketBatchSampler([SQUARE], 1, num_replicas=2, rank=2)
