"""The training loop every reel trainer runs: `Trainer(cfg, model, objective, loader, run_dir).fit()`.

- objective(model, batch, step) -> (loss, metrics): `model` is the DeepSpeed engine (call it like
  the module; attributes pass through to the module). metrics may report `tokens` (and `samples`)
  per micro batch for throughput.
  An objective with state of its own (a discriminator and its optimizer) exposes state_dict() and
  load_state_dict(); that state is the same on every rank and is saved once, by rank 0.
- loader: an endless iterator of (epoch, batch) with state_dict()/load_state_dict(), such as
  ResumableLoader.
- preview(ema_module, step, out_dir) -> file paths, run on rank 0 every train.preview_every steps;
  .png/.jpg go to the tracker as images, .mp4 as videos.

A step takes train.grad_accum micro batches. The loss of each is checked on every rank before its
backward: a non-finite micro batch gets no backward, and a step with no finite micro batch, or
whose gradient norm is not finite, makes no update (no optimizer step, no EMA update). The
learning-rate schedule follows the step count either way.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from reel.distributed import barrier, broadcast_object, init_distributed, init_single_process_group
from reel.errors import ReelError
from reel.train.checkpoint import (CONFIG_FILE, EMA_FILE, ENGINE_DIR, MODEL_FILE, OBJECTIVE_FILE, STATE_FILE,
                                   CheckpointFolders, rank_file_name, resolve_resume, step_dir_name, write_json)
from reel.train.deepspeed_engine import build_engine
from reel.train.ema import ModelEMA, full_state_dict
from reel.train.resumable_loader import batch_size_of
from reel.train.rng import restore_rng_state, rng_untouched, seed_everything
from reel.train.training_log import LogWindow, TrainingLog, as_float, console_logger, finite_or_none, peak_memory_mb

Objective = Callable[[nn.Module, Any, int], tuple[torch.Tensor, dict[str, Any]]]
Preview = Callable[[nn.Module, int, Path], list]


@dataclass
class TrainerState:
    step: int = 0
    nonfinite_steps: int = 0
    nonfinite_in_a_row: int = 0
    last_nonfinite_step: Optional[int] = None
    skipped_steps: int = 0  # steps that made no update
    samples_seen: int = 0
    tokens_seen: int = 0


@dataclass
class StepOutcome:
    loss: Optional[float]  # mean over ranks and finite micro batches
    grad_norm: Optional[float]
    lr: float
    applied: bool
    nonfinite_micro_batches: int
    epoch: int
    samples: int  # over all ranks
    tokens: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def nonfinite(self) -> bool:
        return self.nonfinite_micro_batches > 0 or not self.applied  # no update: no finite loss, or a bad norm


def bf16_enabled(precision: str, device: torch.device) -> bool:
    """precision=auto: bf16 on CUDA and on CPUs with native bf16 kernels; elsewhere bf16 convolutions
    fall back to reference loops (measured 15x slower than fp32 on a CPU without them), so fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


class Trainer:
    def __init__(self, cfg, model: nn.Module, objective: Objective, loader, run_dir=None,
                 preview: Optional[Preview] = None, tracker=None):
        self.cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
        self.train = self.cfg.train
        self.run_dir = Path(run_dir if run_dir is not None else self.train.run_dir)
        self.objective, self.loader, self.preview = objective, loader, preview
        self.ranks = init_distributed(self.cfg.distributed.sp_size, self.cfg.distributed.backend)
        init_single_process_group(self.cfg.distributed.backend)  # DeepSpeed wants a group even for one process
        self.is_main = self.ranks.rank == 0
        self.log = console_logger(self.is_main)
        # The EMA copy is taken before DeepSpeed partitions or moves the weights, and before sequence
        # parallelism: previews run it on rank 0 alone.
        self.ema = ModelEMA(model, self.train.ema_decay, keep=self.is_main)
        # with LoRA adapters only they train, so checkpoints hold only them (the base comes from train.init_from)
        self.adapters_only = getattr(model, "lora", None) is not None
        mpu = self._split_sequence(model) if self.ranks.sp_size > 1 else None
        self.engine, self.scheduler = build_engine(model, self.train, self.ranks.dp_size, mpu)
        self.device = self.engine.device
        self.use_bf16 = bf16_enabled(self.train.precision, self.device)
        self.ema.to(self.device)
        self.state = TrainerState()
        self.checkpoints = CheckpointFolders(self.run_dir / "checkpoints", int(self.train.keep_last))
        self._tracker = tracker
        self._last_saved_step: Optional[int] = None

    def _split_sequence(self, model: nn.Module):
        """Make `model` run sequence-parallel; DeepSpeed's view of the groups (its `mpu`)."""
        from reel.parallel.groups import DeepSpeedGroups, build_parallel_groups
        from reel.parallel.sequence import SequenceParallel, enable_sequence_parallel

        if not hasattr(model, "sequence_parallel"):
            raise ReelError(f"distributed.sp_size={self.ranks.sp_size}: only the DiT trains sequence-parallel; "
                            f"use 1 for {type(model).__name__}")
        groups = build_parallel_groups(self.ranks)
        enable_sequence_parallel(model, SequenceParallel(groups.sp_group, self.ranks.sp_rank, self.ranks.sp_size))
        return DeepSpeedGroups(groups)

    @property
    def model(self) -> nn.Module:
        return self.engine.module

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainerState:
        resumed_from = self._resume_or_start()
        report = TrainingLog(self.run_dir, self._tracker or self._make_tracker(), int(self.train.steps),
                             self.state.step, bool(self.cfg.logging.progress), self.is_main)
        if resumed_from is not None:
            report.forget_after(self.state.step)
        window = LogWindow()
        data = iter(self.loader)
        self.engine.train()
        try:
            while self.state.step < self.train.steps:
                self.state.step += 1
                outcome = self._train_step(data)
                self._count(outcome)
                window.add_step(outcome.loss, outcome.metrics, outcome.samples, outcome.tokens, outcome.seconds)
                report.advance()
                if outcome.nonfinite or self._due(self.train.log_every) or self.state.step == self.train.steps:
                    report.write(self._log_record(outcome, window))
                    window.reset()
                self._stop_if_diverged()
                if self._due(self.train.preview_every):
                    self._run_preview(report)
                if self._due(self.train.ckpt_every):
                    self.save_checkpoint()
            if self._last_saved_step != self.state.step:
                self.save_checkpoint()
        finally:
            report.close()
        return self.state

    def _train_step(self, data) -> StepOutcome:
        started = time.perf_counter()
        step = self.state.step
        lr = float(self.scheduler.get_last_lr()[0])
        losses, metric_sums = [], {}
        nonfinite, backwards, samples, tokens, epoch = 0, 0, 0, 0, 0
        for _ in range(int(self.train.grad_accum)):
            epoch, batch = next(data)
            batch = move_to_device(batch, self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                loss, metrics = self.objective(self.engine, batch, step)
            metrics = {k: as_float(v) for k, v in (metrics or {}).items()}
            local_samples = int(metrics.pop("samples", 0) or batch_size_of(batch) or self.train.batch_size)
            mean_loss, finite, global_samples, global_tokens = self._reduce_over_ranks(
                loss, local_samples, int(metrics.pop("tokens", 0)))
            samples, tokens = samples + global_samples, tokens + global_tokens
            if not finite:
                nonfinite += 1
                continue  # no backward: the engine never sees this micro batch
            self.engine.backward(loss)
            backwards += 1
            losses.append(mean_loss)
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + value
        applied, grad_norm = False, None
        if backwards:
            self.engine.step()
            applied = self.engine.was_step_applied()
            grad_norm = finite_or_none(_as_optional_float(self.engine.get_global_grad_norm()))
        if not applied:
            self.scheduler.step()  # DeepSpeed only steps it on updates; the schedule follows the step count
        else:
            self.ema.update(self.engine.module)
        return StepOutcome(loss=sum(losses) / len(losses) if losses else None,
                           grad_norm=grad_norm if applied else None, lr=lr, applied=applied,
                           nonfinite_micro_batches=nonfinite, epoch=epoch, samples=samples, tokens=tokens,
                           seconds=time.perf_counter() - started,
                           metrics={k: v / backwards for k, v in metric_sums.items()})

    def _reduce_over_ranks(self, loss: torch.Tensor, samples: int, tokens: int) -> tuple[float, bool, int, int]:
        """(mean loss, finite on every rank, samples and tokens summed over ranks)."""
        value = loss.detach().float().reshape(())
        finite = torch.isfinite(value)
        packed = torch.stack([torch.where(finite, value, torch.zeros_like(value)), (~finite).float(),
                              torch.tensor(float(samples), device=value.device),
                              torch.tensor(float(tokens), device=value.device)]).double()
        if self.ranks.world_size > 1:
            dist.all_reduce(packed)
        loss_sum, nonfinite_ranks, samples, tokens = packed.tolist()
        # the ranks of a sequence-parallel group share their samples, each with its slice's share of the loss
        sp = self.ranks.sp_size
        return loss_sum / self.ranks.dp_size, nonfinite_ranks == 0, int(samples) // sp, int(tokens) // sp

    def _count(self, outcome: StepOutcome) -> None:
        state = self.state
        state.samples_seen += outcome.samples
        state.tokens_seen += outcome.tokens
        if not outcome.applied:
            state.skipped_steps += 1
        if not outcome.nonfinite:
            state.nonfinite_in_a_row = 0
            return
        state.nonfinite_steps += 1
        state.nonfinite_in_a_row += 1
        state.last_nonfinite_step = state.step
        what = (f"loss not finite in {outcome.nonfinite_micro_batches} of {self.train.grad_accum} micro batches"
                if outcome.nonfinite_micro_batches else "gradient norm not finite")
        self.log.warning(f"step {state.step}: {what}; "
                         f"{'update made from the rest' if outcome.applied else 'no update'}")

    def _stop_if_diverged(self) -> None:
        limit = int(self.train.max_nonfinite_in_a_row)
        if self.state.nonfinite_in_a_row >= limit:
            raise ReelError(f"loss was not finite for {self.state.nonfinite_in_a_row} steps in a row "
                            f"(last at step {self.state.last_nonfinite_step}); lower train.lr or check the data")

    def _due(self, every: int) -> bool:
        return self.state.step % int(every) == 0

    def _log_record(self, outcome: StepOutcome, window: LogWindow) -> dict[str, Any]:
        record = {"step": self.state.step, "epoch": outcome.epoch, "loss": finite_or_none(window.mean_loss()),
                  "grad_norm": outcome.grad_norm, "lr": outcome.lr,
                  "samples_per_s": window.samples / max(window.seconds, 1e-9),
                  "peak_memory_mb": peak_memory_mb(self.device), "nonfinite": outcome.nonfinite,
                  "nonfinite_steps": self.state.nonfinite_steps, "skipped_steps": self.state.skipped_steps}
        if window.tokens:
            record["tokens_per_s"] = window.tokens / max(window.seconds, 1e-9)
        for name, value in window.mean_metrics().items():
            record.setdefault(name, finite_or_none(value))
        return record

    def _run_preview(self, report: TrainingLog) -> None:
        if self.preview is None or not self.is_main:
            return
        out_dir = self.run_dir / "previews" / step_dir_name(self.state.step)
        out_dir.mkdir(parents=True, exist_ok=True)
        with rng_untouched(), torch.no_grad():
            paths = self.preview(self.ema.module, self.state.step, out_dir) or []
        report.media(paths, self.state.step)

    def _make_tracker(self):
        from reel.tracking import Tracker

        return Tracker(self.cfg, self.run_dir, job_type="train", rank=self.ranks.rank)

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write run_dir/checkpoints/step_XXXXXXX (every rank must call it)."""
        from safetensors.torch import save_file

        step, rank = self.state.step, self.ranks.rank
        temporary = self.checkpoints.temporary_folder(step)
        with rng_untouched() as rng_state:  # saving must not shift the training stream
            if self.is_main:
                shutil.rmtree(temporary, ignore_errors=True)
                temporary.mkdir(parents=True)
            barrier()
            self.engine.save_checkpoint(str(temporary), tag=ENGINE_DIR, save_latest=False,
                                        exclude_frozen_parameters=self.adapters_only)
            model_state = self._saved(full_state_dict(self.engine.module, keep=self.is_main))
            write_json(temporary / rank_file_name(rank), {"rng": rng_state, "data": self.loader.state_dict()})
            if self.is_main:
                metadata = {"step": str(step)}
                save_file(model_state, str(temporary / MODEL_FILE), metadata=metadata)
                save_file(self._saved(self.ema.state_dict()), str(temporary / EMA_FILE), metadata=metadata)
                write_json(temporary / STATE_FILE, self._state_record())
                if hasattr(self.objective, "state_dict"):
                    torch.save(self.objective.state_dict(), temporary / OBJECTIVE_FILE)
                (temporary / CONFIG_FILE).write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
            barrier()
            final = self.checkpoints.root / step_dir_name(step)
            if self.is_main:
                final = self.checkpoints.publish(temporary, step)
                self.checkpoints.prune()
            barrier()
        self._last_saved_step = step
        return final

    def _saved(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.adapters_only:
            return state
        from reel.models.lora import lora_state_dict

        return {name: t for name, t in state.items() if name in lora_state_dict(self.engine.module)}

    def _state_record(self) -> dict[str, Any]:
        data = self.loader.state_dict()
        return {"step": self.state.step, "epoch": data.get("epoch"), "data": data, "counters": asdict(self.state),
                "world_size": self.ranks.world_size, "dp_size": self.ranks.dp_size,
                "batch_size": int(self.train.batch_size), "grad_accum": int(self.train.grad_accum),
                "zero_stage": int(self.train.zero_stage), "precision": str(self.train.precision)}

    def _resume_or_start(self) -> Optional[Path]:
        """Load train.resume (every rank the same folder, chosen and verified by rank 0) or seed afresh."""
        choice = broadcast_object(self._choose_checkpoint() if self.is_main else None)
        if isinstance(choice, ReelError):
            raise ReelError(str(choice))
        if choice is None:
            # sp ranks of one group share a seed: they must draw the same noise and timesteps.
            seed_everything(int(self.cfg.seed) + self.ranks.dp_rank)
            return None
        self._load_checkpoint(Path(choice))
        return Path(choice)

    def _choose_checkpoint(self) -> str | ReelError | None:
        """Rank 0's pick (a path, None for a fresh start, or the error every rank must raise)."""
        self.checkpoints.remove_leftovers()
        try:
            found = resolve_resume(self.train.resume, self.checkpoints)
        except ReelError as error:
            return error
        start_step = 0 if found is None else int(json.loads((found / STATE_FILE).read_text())["step"])
        self.checkpoints.set_aside_newer_than(start_step)
        return None if found is None else str(found)

    def _load_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import load_file

        record = json.loads((folder / STATE_FILE).read_text())
        if record["world_size"] != self.ranks.world_size:
            raise ReelError(f"train.resume: checkpoint {folder} was written by {record['world_size']} processes, "
                            f"this run has {self.ranks.world_size}; resume with the same number")
        load_path, _ = self.engine.load_checkpoint(str(folder), tag=ENGINE_DIR, load_optimizer_states=True,
                                                   load_lr_scheduler_states=True,
                                                   load_module_strict=not self.adapters_only)
        if load_path is None:
            raise ReelError(f"train.resume: DeepSpeed could not load {folder / ENGINE_DIR}")
        if self.is_main:
            self.ema.load_state_dict(load_file(str(folder / EMA_FILE), device=str(self.device)),
                                     strict=not self.adapters_only)
        if hasattr(self.objective, "load_state_dict") and (folder / OBJECTIVE_FILE).is_file():
            self.objective.load_state_dict(torch.load(folder / OBJECTIVE_FILE, map_location="cpu", weights_only=True))
        own = json.loads((folder / rank_file_name(self.ranks.rank)).read_text())
        self.loader.load_state_dict(own["data"])
        self.state = TrainerState(**record["counters"])
        self._last_saved_step = self.state.step
        restore_rng_state(own["rng"])  # last: nothing after it may draw from the training stream
        self.log.info(f"resumed from {folder} at step {self.state.step}")


def _as_optional_float(value) -> Optional[float]:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)
