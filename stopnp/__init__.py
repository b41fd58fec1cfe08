"""stopnp: train spiking neural networks with STOP in NumPy + Numba.

    build(config, **overrides) -> Network          a model name, packaged recipe name, config dict or
                                                   TOML/JSON path
    net.params                                     name -> plain writable NumPy array
    gradients(net, x, y, rule="stop", **options)   gradients of one batch, same names
    simulate(net, x, record=(...), y=None)         per-layer, per-step U, s, traces, δ
    predict(net, x)                                argmax of Σ_t o[t]
    stopnp.train.train(config, resume=None)        the training loop (a module: `stopnp.train` is it,
                                                   so the package does not shadow it with a function)
    load(path) -> Network; save(net, path)         HDF5 checkpoints
"""
from ._version import __version__
from .api import gradients, predict, run_batch, simulate
from .config import ConfigError
from .engine.network import Network, ShapeError, build

__all__ = ["__version__", "build", "gradients", "simulate", "predict", "run_batch", "load", "save",
           "Network", "ConfigError", "ShapeError"]


def load(path) -> Network:
    """The network stored in a checkpoint (config and parameters validated)."""
    from .run.resume import load_network
    return load_network(path)[0]


def save(net: Network, path, **extra):
    """Write a checkpoint holding only the network (parameters and config), atomically."""
    from .run.checkpoint import save as _save
    _save(path, params=net.params, opt_state={}, rng_state={}, config=net.config, epoch=extra.get("epoch", 0),
          step=extra.get("step", 0), metrics=extra.get("metrics", ()))
    return path
