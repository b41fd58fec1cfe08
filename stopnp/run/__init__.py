"""Training runs: the training loop (train.py), checkpoints (checkpoint.py), the θ/α history (history.py),
the run-folder lock (lock.py), the silent-layer and chance checks (activity.py), progress and metrics
(progress.py), and data-parallel training over MPI (distributed.py)."""
