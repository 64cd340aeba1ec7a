"""Where the tokens of one forward call sit in the video: the grid every layer is handed."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional, Tuple

import torch

from reel.models.rope import Rope3D, grid_positions, rope_table


@dataclass(eq=False)
class TokenGrid:
    """A (frames, height, width) raster of tokens, frames first, starting at absolute frame `frame_offset`.

    In block-causal mode frame f belongs to chunk f // causal_chunk (absolute frames, after
    patching), so a grid that starts mid-video (a cached chunk, a sequence-parallel slice)
    still knows its chunks. The RoPE tables are computed once per grid and shared by every layer.
    """

    frames: int
    height: int
    width: int
    frame_offset: int = 0
    causal_chunk: Optional[int] = None
    rope: Optional[Rope3D] = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    parallel: Optional[Any] = None  # a sequence-parallel slice (reel.parallel.sequence.SequenceSlice)
    commit_frames: Optional[int] = None  # a cache update stores only the first ones (None: every frame)

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    @property
    def num_tokens(self) -> int:
        return self.frames * self.tokens_per_frame

    @property
    def causal(self) -> bool:
        return self.causal_chunk is not None

    @property
    def committed_frames(self) -> int:
        """The frames, from the first, that a cache update (update_cache=True) stores."""
        return self.frames if self.commit_frames is None else self.commit_frames

    def replace(self, **changes) -> "TokenGrid":
        """A new grid (with its own RoPE tables), e.g. the full sequence of a sequence-parallel slice."""
        return dataclasses.replace(self, **changes)

    @cached_property
    def rope_cos_sin(self) -> Tuple[torch.Tensor, torch.Tensor]:
        positions = grid_positions(self.frames, self.height, self.width, self.frame_offset, self.device)
        return self.rope(positions)

    @cached_property
    def rope_table(self) -> torch.Tensor:
        """The complex rotations (N, head_dim / 2) of rope.rotate, built once for every layer."""
        cos, sin = self.rope_cos_sin
        return rope_table(cos, sin, self.rope.head_dim)

    def frame_index(self) -> torch.Tensor:
        """Absolute index of each frame of the grid."""
        return torch.arange(self.frame_offset, self.frame_offset + self.frames, device=self.device)

    def chunk_index(self) -> torch.Tensor:
        """Absolute chunk of each frame (block-causal mode)."""
        return self.frame_index() // self.causal_chunk

    def chunk_end(self) -> torch.Tensor:
        """For each frame, the local index of the last frame of its chunk that lies in this grid."""
        ends = (self.chunk_index() + 1) * self.causal_chunk - self.frame_offset - 1
        return ends.clamp(max=self.frames - 1)
