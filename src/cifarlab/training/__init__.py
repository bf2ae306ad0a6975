"""Training (package `training`, so that `cifarlab.train` stays the function): the one loop, optimizers and schedules, EMA, checkpoints and resume.

Never writes plots or HTML; receives validation as a function so it does not depend on evaluate.
"""
from .checkpoint import (CheckpointError, ResumePoint, load_model_checkpoint, load_resume_point, load_train_state,
                         load_weights, read_checkpoint_metadata, save_checkpoint, stamp_checkpoint)
from .fit import fit
from .fit_strategy import Fitted, fit_strategy
from .strategy import caches_trunk, check_distributable, projected_passes
from .loop import Trainer
from .state import FitResult, TrainingDiverged, TrainingInterrupted, TrainingOutOfMemory, TrainState
from .lr_find import lr_range_test, suggest
from .optim import ConvMuon, Schedule, build_optimizers, lr_multiplier, param_groups
from .cached import fit_cached
from . import distributed

__all__ = ["fit", "fit_strategy", "Fitted", "caches_trunk", "check_distributable", "projected_passes", "FitResult", "Trainer", "TrainState", "TrainingDiverged", "TrainingInterrupted", "TrainingOutOfMemory", "CheckpointError", "ResumePoint", "load_resume_point",
           "save_checkpoint", "load_weights", "load_model_checkpoint", "load_train_state", "read_checkpoint_metadata", "stamp_checkpoint", "ConvMuon", "Schedule", "build_optimizers",
           "lr_multiplier", "param_groups", "lr_range_test", "suggest", "fit_cached", "distributed"]
