"""``stopnp.train.train(config, resume=None)``: the public entry of the training loop (stopnp/run/train.py).

A module, not a function on the package, so that ``stopnp.train`` names the same thing in every import.
"""
from .run.train import RunResult, TrainingError, train

__all__ = ["train", "RunResult", "TrainingError"]
