"""Training engine (DeepSpeed, checkpoints, EMA, resume) and objectives.

    loader = ResumableLoader(dataset, batch_sampler, collate_fn)
    Trainer(cfg, model, objective, loader, run_dir, preview=preview).fit()
    ckpt = load_training_checkpoint("runs/x")   # newest good checkpoint: ckpt.ema, ckpt.trainer_state
"""
from reel.train.checkpoint import TrainingCheckpoint, load_training_checkpoint
from reel.train.engine import Trainer, TrainerState
from reel.train.resumable_loader import ResumableLoader
from reel.train.rng import seed_everything
from reel.train.schedule import warmup_then_decay

__all__ = ["Trainer", "TrainerState", "ResumableLoader", "TrainingCheckpoint", "load_training_checkpoint",
           "seed_everything", "warmup_then_decay"]
