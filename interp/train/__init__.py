"""In-house training of small hooked models, with checkpoints to watch circuits form."""

from interp.train.args import SCHEDULERS, TrainingArguments, lr_lambda
from interp.train.checkpoints import latest_checkpoint, list_checkpoints
from interp.train.data import DataMix
from interp.train.loop import TrainResult, train
from interp.train.metrics import read_metrics
from interp.train.presets import PRESETS, Preset, get_preset
from interp.train.run import training_arguments

__all__ = [
    "PRESETS", "SCHEDULERS", "DataMix", "Preset", "TrainResult", "TrainingArguments", "get_preset",
    "latest_checkpoint", "list_checkpoints", "lr_lambda", "read_metrics", "train", "training_arguments",
]
