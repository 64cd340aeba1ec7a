"""Process groups for data parallel x sequence parallel, and the view of them DeepSpeed takes.

Ranks r = dp_rank * sp_size + sp_rank: the sp_size consecutive ranks of one sequence-parallel group
(one node where possible) see the same samples; a data-parallel group holds one rank of every
sequence-parallel group. DeepSpeed is handed `DeepSpeedGroups` as its `mpu`: its data-parallel
group is the DP group, and it reduces gradients over the sequence-data-parallel group (all ranks),
summing over SP and averaging over DP, so each rank's loss is its slice's share of the sample's loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import torch.distributed as dist

from reel.distributed import ParallelRanks


@dataclass
class ParallelGroups:
    ranks: ParallelRanks
    sp_group: Any
    dp_group: Any
    world_group: Any
    single_group: Any  # this rank alone: DeepSpeed's model-parallel group

    @property
    def sp_ranks(self) -> List[int]:
        start = self.ranks.dp_rank * self.ranks.sp_size
        return list(range(start, start + self.ranks.sp_size))


def build_parallel_groups(ranks: ParallelRanks) -> ParallelGroups:
    """Every rank creates every group in the same order (torch.distributed requires it)."""
    if not dist.is_initialized():
        raise RuntimeError("sequence parallelism needs a process group: launch with torchrun")
    world, sp = ranks.world_size, ranks.sp_size
    sp_group = dp_group = single = None
    for start in range(0, world, sp):
        group = dist.new_group(list(range(start, start + sp)))
        if start <= ranks.rank < start + sp:
            sp_group = group
    for offset in range(sp):
        group = dist.new_group(list(range(offset, world, sp)))
        if ranks.rank % sp == offset:
            dp_group = group
    for rank in range(world):
        group = dist.new_group([rank])
        if rank == ranks.rank:
            single = group
    return ParallelGroups(ranks, sp_group, dp_group, dist.group.WORLD, single)


class DeepSpeedGroups:
    """The `mpu` interface DeepSpeed queries for its data, sequence and model-parallel groups."""

    def __init__(self, groups: ParallelGroups):
        self.groups, self.ranks = groups, groups.ranks

    def get_data_parallel_group(self):
        return self.groups.dp_group

    def get_data_parallel_world_size(self) -> int:
        return self.ranks.dp_size

    def get_data_parallel_rank(self) -> int:
        return self.ranks.dp_rank

    def get_data_parallel_group_ranks(self) -> List[int]:
        return list(range(self.ranks.sp_rank, self.ranks.world_size, self.ranks.sp_size))

    def get_sequence_parallel_group(self):
        return self.groups.sp_group

    def get_sequence_parallel_world_size(self) -> int:
        return self.ranks.sp_size

    def get_sequence_parallel_rank(self) -> int:
        return self.ranks.sp_rank

    def get_sequence_data_parallel_group(self):
        return self.groups.world_group

    def get_sequence_data_parallel_world_size(self) -> int:
        return self.ranks.world_size

    def get_sequence_data_parallel_rank(self) -> int:
        return self.ranks.rank

    def get_model_parallel_group(self):
        return self.groups.single_group

    def get_model_parallel_world_size(self) -> int:
        return 1

    def get_model_parallel_rank(self) -> int:
        return 0

    get_tensor_model_parallel_group = get_model_parallel_group
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_rank = get_model_parallel_rank

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.ranks.rank
