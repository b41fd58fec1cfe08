"""stopnp: train spiking neural networks with STOP in NumPy + Numba.

    build(config, **overrides) -> Network          a model name, config dict or TOML/JSON path
    net.params                                     name -> plain writable NumPy array
    gradients(net, x, y, rule="stop", **options)   gradients of one batch, same names
    simulate(net, x, record=(...), y=None)         per-layer, per-step U, s, traces, δ
"""
from ._version import __version__
from .api import gradients, predict, run_batch, simulate
from .config import ConfigError
from .network import Network, ShapeError, build

__all__ = ["__version__", "build", "gradients", "simulate", "predict", "run_batch", "Network",
           "ConfigError", "ShapeError"]
