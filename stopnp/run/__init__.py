"""Training runs.

    train.py        the training loop: prepare, step, epoch, end of epoch; evaluation
    resume.py       reading a run back: the network of a checkpoint (stopnp.load), a resume's checks
    folder.py       the run folder: its files, whether a run may write there
    lock.py         one writer per run folder
    checkpoint.py   the HDF5 checkpoint format (atomic, checksummed, no pickle)
    history.py      θ and α after every epoch (history.h5)
    activity.py     silent layers and a loss stuck at chance, found during training
    progress.py     the progress bar and the metrics log
    distributed.py  data-parallel training over MPI: the ranks, their shares, the sums
"""
