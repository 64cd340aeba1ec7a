"""Rank bookkeeping for data parallel x sequence parallel."""
import pytest

from reel.distributed import launched_by_torchrun, parallel_ranks, split_ranks
from reel.errors import ReelError


def test_sequence_parallel_groups_are_consecutive_ranks():
    assert [split_ranks(r, 8, 2) for r in range(4)] == [(0, 4, 0, 2), (0, 4, 1, 2), (1, 4, 0, 2), (1, 4, 1, 2)]
    assert split_ranks(5, 8, 1) == (5, 8, 0, 1)
    with pytest.raises(ReelError, match="sp_size=3"):
        split_ranks(0, 8, 3)


def test_one_process_without_a_launcher_is_rank_zero_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_torchrun()
    ranks = parallel_ranks(1)
    assert (ranks.rank, ranks.world_size, ranks.dp_size, ranks.sp_size) == (0, 1, 1, 1) and ranks.is_main
