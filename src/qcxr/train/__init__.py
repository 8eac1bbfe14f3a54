"""Training: optimizers with a freeze mask, jitted steps, the epoch loop, Orbax checkpoints.

This package sees the model only through apply functions (the feature cache also reads the
backbone's identity: name, module, weights id), the data only through `batches(split, epoch)`-style
objects (the feature cache also reads their image-cache keys), and logs only through a Tracker. It
never imports mlflow, hydra or `qcxr.data` internals.
"""

from qcxr.train.checkpoint import Checkpoints
from qcxr.train.features import FeatureBatches, cached_features, feature_keys, tree_fingerprint
from qcxr.train.loop import Evaluation, FitResult, NonFiniteLossError, compile_step, evaluate, fit
from qcxr.train.optim import FROZEN, TRAINABLE, make_schedule
from qcxr.train.steps import init_state, make_eval_step, make_train_step

__all__ = [
    "FROZEN",
    "TRAINABLE",
    "Checkpoints",
    "Evaluation",
    "FeatureBatches",
    "FitResult",
    "NonFiniteLossError",
    "cached_features",
    "compile_step",
    "evaluate",
    "feature_keys",
    "fit",
    "init_state",
    "make_eval_step",
    "make_schedule",
    "make_train_step",
    "tree_fingerprint",
]
