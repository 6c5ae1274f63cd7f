"""Training: supernet pre-training and detection fine-tuning, retraining a found architecture (DetNAS section 5)."""

from detnas.train.recipes import RECIPES, TrainConfig, register_recipe, resolve_config
from detnas.train.stages import (
    STAGES,
    Classifier,
    run_stage,
    train_child_cls,
    train_child_det,
    train_supernet_cls,
    train_supernet_det,
)

__all__ = [
    "RECIPES", "STAGES", "Classifier", "TrainConfig", "register_recipe", "resolve_config", "run_stage", "train_child_cls",
    "train_child_det", "train_supernet_cls", "train_supernet_det",
]
