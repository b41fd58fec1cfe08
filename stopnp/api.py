"""The public functions: gradients of one batch, and a recording forward pass.

    gradients(net, x, y, rule="stop", **options) -> {name: ∂E/∂param}
    simulate(net, x, record=("u", "s"), y=None)   -> {"<layer>.<what>": (T, B, ...)}
    predict(net, x)                               -> (B,) argmax of Σ_t o[t]
"""
import numpy as np

from .config import ConfigError, validate_field
from .engine.network import Network, check_input, check_params
from .rules import RULES, runner
from .rules.common import resolve_options


def _check_net(net):
    if not isinstance(net, Network):
        raise ConfigError(f"expected a stopnp Network, got {type(net).__name__}; "
                          f"build one first: net = stopnp.build(config)")


def _is_fixed(net, numerics):
    """The explicit ``numerics`` option, else the network's config, names the integer network."""
    _check_net(net)
    if numerics is not None:
        numerics = validate_field("numerics", "kind", numerics, name="option numerics (numerics.kind)")
    return (numerics or net.config["numerics"]["kind"]) == "fixed"


def _params_as(net, dtype):
    # once per batch: the kernels then get contiguous arrays of the run's dtype (no per-step copies)
    return {k: (v if v.dtype == dtype and v.flags.c_contiguous else np.ascontiguousarray(v, dtype))
            for k, v in net.params.items()}


def run_batch(net, x, y=None, rule="stop", *, rng=None, record=(), **options):
    """Validate once, then run one batch with ``rule``; returns the rule's ``Result``."""
    _check_net(net)
    check_input(net, x, y)
    check_params(net)
    opts = resolve_options(net, rule, options)
    params = _params_as(net, x.dtype)
    return runner(rule)(net, params, x, y, opts, rng=rng, record=record)


def gradients(net, x, y, rule="stop", numerics=None, **options) -> dict:
    """Gradients of one batch without updating anything. float64 ``x`` gives float64 arithmetic;
    ``numerics="fixed"`` (default: the config's numerics.kind): the integer STOP step of fixed/integer.py.

    Options (defaults from ``net.config``): learn ("W", "WT", "WL", "WTL"), alpha_reduce, detach_reset,
    loss, loss_reduce, mix, kernels ("blas" | "loop"), reset, surrogate, bn_mode ("train" | "eval"),
    smooth (finite-difference checks only).
    """
    if y is None:
        raise ValueError("gradients: labels y are required")
    if _is_fixed(net, numerics):
        _fixed_options(options, ("learn_last",))
        learn_last = validate_field("numerics", "learn_last", options.get("learn_last", 0),
                               name="option learn_last (numerics.learn_last)")
        return _gradients_fixed(net, x, y, rule, learn_last)
    return run_batch(net, x, y, rule, **options).grads


def _fixed_options(options, valid=()):
    """The integer network takes its settings from the config: refuse options it would ignore
    (bn_mode='eval' is what it does: BN folded into W and a bias with the running statistics)."""
    extra = [k for k in options if k not in valid and (k, options[k]) != ("bn_mode", "eval")]
    if extra:
        raise ConfigError(f"option(s) {', '.join(extra)} with numerics='fixed': the integer network takes "
                          f"{', '.join(valid) or 'no options'} (its settings are the config's numerics.*)")


def _gradients_fixed(net, x, y, rule, learn_last=0):
    """STOP gradients of the integer network (fixed/integer.py), dequantized: what the MCU accumulates."""
    from .fixed import integer as fixed
    from .fixed.formats import dequantize
    if rule != "stop":
        raise ValueError("numerics='fixed' computes STOP gradients only; use rule='stop'")
    check_input(net, x, y)
    fixed.check_supported(net, learn=True)
    qnet = fixed.quantize(net)
    _, grads, _ = fixed.run(qnet, fixed.quantize_input(qnet, x), y, learn_last=learn_last)
    return {k: dequantize(v, qnet.fmt.g_frac) for k, v in grads.items()}


def simulate(net, x, record=("u", "s"), y=None, rule="stop", numerics=None, **options) -> dict:
    """Forward pass recording per layer and step: u, s, v, i; with labels y also delta, g, w_trace,
    th_trace, al_trace (the STOP learning quantities; nothing is updated).

    ``numerics="fixed"`` (default: the config's numerics.kind) runs the integer network of fixed/integer.py and
    records u, s, v, i (with labels also delta) as the integers the C export holds, dequantized to float64.
    """
    if _is_fixed(net, numerics):
        _fixed_options(options)
        return _simulate_fixed(net, x, y)
    if rule != "stop":
        raise ValueError("simulate records the online (stop) pass; use rule='stop'")
    res = run_batch(net, x, y, rule, record=tuple(record), **options)
    return res.records


def _simulate_fixed(net, x, y=None):
    from .fixed import integer as fixed
    from .fixed.formats import dequantize
    check_input(net, x, y)
    qnet = fixed.quantize(net)
    rec = {}
    fixed.run(qnet, fixed.quantize_input(qnet, x), y, record=rec)
    f = qnet.fmt
    frac = {"u": f.v_frac, "v": f.v_frac, "i": f.v_frac, "delta": f.e_frac, "s": 0}
    return {k: dequantize(np.array(v), frac[k.rsplit(".", 1)[1]]) for k, v in rec.items()}


def predict(net, x, numerics=None, **options) -> np.ndarray:
    """argmax over classes of Σ_t o[t] (BN in eval mode), with the network's own neuron model;
    ``numerics="fixed"`` (default: the config's numerics.kind): the integer network of fixed/integer.py."""
    if _is_fixed(net, numerics):
        from .fixed import integer as fixed
        _fixed_options(options)
        check_input(net, x)
        return fixed.predict(fixed.quantize(net), x)
    rule = RULES[net.config["rule"]["name"]].forward
    res = run_batch(net, x, None, rule, bn_mode="eval", **{"learn": "W", **options})
    return res.out_sum.argmax(axis=1)
