"""Run under torchrun: the DiT split over all ranks (SP = world size) against the same DiT on one
process, for every attention kind, causal and not, with a video whose frames do not divide evenly.

Writes one JSON line per case to argv[1] (rank 0): relative errors of the output and of the
parameter gradients (summed over ranks, as DeepSpeed reduces them).
"""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from dit_helpers import tiny_dit, tiny_inputs  # noqa: E402

from reel.distributed import init_distributed  # noqa: E402
from reel.parallel.groups import build_parallel_groups  # noqa: E402
from reel.parallel.sequence import SequenceParallel, enable_sequence_parallel  # noqa: E402

CASES = [
    dict(attention="linear"), dict(attention="softmax"), dict(attention="sparse"),
    dict(attention=["linear", "softmax", "sparse"], depth=3),
    dict(attention="linear", causal_chunk=1), dict(attention="softmax", causal_chunk=1),
    dict(attention="sparse", causal_chunk=2), dict(attention=["linear", "sparse", "softmax"], depth=3, causal_chunk=2),
    dict(attention="linear", mixffn_temporal="dense"),
    dict(attention=["linear", "softmax"], depth=2, causal_chunk=1, per_frame_times=True),
]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def run_case(index: int, overrides: dict, sp: SequenceParallel, frames: int) -> dict:
    overrides = dict(overrides)
    latents, timesteps, text, mask = tiny_inputs(frames=frames, height=4, width=6)
    if overrides.pop("per_frame_times", False):  # one time per latent frame (self-forcing, diffusion forcing)
        timesteps = torch.rand(latents.shape[0], frames, generator=torch.Generator().manual_seed(index))
    weights = torch.randn(latents.shape, generator=torch.Generator().manual_seed(index))

    reference = tiny_dit(seed=index, **overrides)
    out_ref = reference(latents, timesteps, text, mask)
    (out_ref * weights).sum().backward()

    model = enable_sequence_parallel(tiny_dit(seed=index, **overrides), sp)
    out = model(latents, timesteps, text, mask)
    own = model.loss_frames(latents.shape[2])  # this rank's share of the loss
    (out * weights)[:, :, own].sum().backward()
    grad_errors = {}
    for (name, p), p_ref in zip(model.named_parameters(), reference.parameters()):
        grad = p.grad.clone()
        dist.all_reduce(grad, group=sp.group)
        grad_errors[name] = relative_error(grad, p_ref.grad)
    worst = max(grad_errors, key=grad_errors.get)
    return {"case": CASES[index], "frames": frames, "output": relative_error(out, out_ref),
            "grad": grad_errors[worst], "worst_param": worst, "params": len(grad_errors)}


def main() -> None:
    torch.set_num_threads(1)
    ranks = init_distributed(int(os.environ["WORLD_SIZE"]))
    groups = build_parallel_groups(ranks)
    sp = SequenceParallel(groups.sp_group, ranks.sp_rank, ranks.sp_size)
    results = [run_case(i, case, sp, frames) for i, case in enumerate(CASES) for frames in (5, 8)]
    if ranks.rank == 0:
        Path(sys.argv[1]).write_text("\n".join(json.dumps(r) for r in results) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
