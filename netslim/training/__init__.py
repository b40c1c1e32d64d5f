"""Training, evaluation (with optional distillation and regularizers) and seeding."""

from netslim.training.seed import seed_everything
from netslim.training.trainer import OPTIMIZERS, SCHEDULERS, TrainResult, evaluate, train

__all__ = ["OPTIMIZERS", "SCHEDULERS", "TrainResult", "evaluate", "seed_everything", "train"]
