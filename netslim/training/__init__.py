"""Training, evaluation (with optional distillation and regularizers), seeding, checkpoints and
optimizer state that follows structural pruning."""

from netslim.training.checkpoint import RunCheckpoint
from netslim.training.optim_state import note_replacements, shrink_optimizer_state
from netslim.training.seed import seed_everything
from netslim.training.trainer import (
    OPTIMIZERS,
    SCHEDULERS,
    TrainResult,
    evaluate,
    logits_of,
    train,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "RunCheckpoint",
    "TrainResult",
    "evaluate",
    "logits_of",
    "note_replacements",
    "seed_everything",
    "shrink_optimizer_state",
    "train",
]
