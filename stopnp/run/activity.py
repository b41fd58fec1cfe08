"""Silent layers and a loss stuck at chance, told in one line after the epoch that shows them.

Per epoch, from the spike counts the rules return (Σ_{t,b,j} s per layer):

    rate^l      = count^l / (samples · T · n_l)          spikes per neuron and step
    silent      : rate^l < SILENT_RATE                    (no spikes, or practically none)
    E_chance    = T · (c_ce · ln C + c_mse / C)           the loss of a constant output o[t] = 0
                                                          (c_ce, c_mse from loss.coefficients)
    at chance   : |train_loss − E_chance| ≤ CHANCE_TOL · E_chance and test_acc < 2 / C

A spiking output layer that never fires gives o[t] = 0 at every step, so its loss is exactly E_chance
(T·ln C for the summed cross-entropy): nothing separates the classes and the run stays at chance.
``check`` names the silent layers (the first one is where the signal dies) and the likely fixes;
``ActivityCheck`` sums the counts over an epoch and stops the run when the loss has stayed at chance for
``STOP_AFTER`` epochs in a row.
"""
import math

from ..kernels import loss as loss_mod

SILENT_RATE = 1e-4     # spikes per neuron and step below which a layer counts as silent
CHANCE_TOL = 0.01      # relative distance of the train loss to E_chance that counts as "at chance"
STOP_AFTER = 3         # epochs in a row at chance after which training stops


def chance_loss(cfg) -> float:
    """The loss of an output that is 0 at every step (a silent spiking readout)."""
    T, C = cfg["data"]["T"], cfg["model"]["n_classes"]
    c_ce, c_mse = loss_mod.coefficients(cfg["loss"]["kind"], cfg["loss"]["mix"], cfg["loss"]["reduce"], T)
    return T * (c_ce * math.log(C) + c_mse / C)


def check(net, cfg, rates, train_loss, test_acc, epoch) -> str:
    """One line naming what is wrong and the likely fix, or "" when every layer fires and the loss moves.

    ``rates``: layer name -> spikes per neuron and step over the epoch (layers without counts left out)."""
    silent = [layer.name for layer in net.layers if layer.spiking and layer.name in rates
              and rates[layer.name] < SILENT_RATE]
    e0 = chance_loss(cfg)
    stuck = abs(train_loss - e0) <= CHANCE_TOL * e0 and test_acc < 2.0 / cfg["model"]["n_classes"]
    if not silent and not stuck:
        return ""
    model, optim = cfg["model"], cfg["optim"]
    out = net.output.name
    parts = []
    if silent:
        names = ", ".join(f"{n!r} ({_rate(rates[n])})" for n in silent)
        parts.append(f"layer{'s' * (len(silent) > 1)} {names} fired (almost) no spikes "
                     f"(spikes per neuron and step)")
    if stuck:
        parts.append(f"train loss {train_loss:.4f} is the loss of a constant output ({e0:.4f} = "
                     f"{_chance_formula(cfg)}): the run is at chance")
    fixes = []
    if out in silent or (stuck and net.output.spiking):
        fixes.append(f"model.readout = \"membrane\" (a non-spiking output layer {out!r})")
    fixes.append(f"a lower optim.lr (now {optim['lr']:g})")
    if any(n != out for n in silent) or (out in silent and len(silent) == 1):
        fixes.append(f"a larger model.init_gain (now {model['init_gain']:g}) or a lower neuron.theta_init "
                     f"(now {cfg['neuron']['theta_init']:g})")
    return f"warning: epoch {epoch}: {'; '.join(parts)}; try {', '.join(fixes)}"


def _rate(r):
    return "0" if r == 0 else f"{r:.1e}"


def _chance_formula(cfg):
    kind, reduce = cfg["loss"]["kind"], cfg["loss"]["reduce"]
    if kind == "ce":
        return "T·ln C" if reduce == "sum" else "ln C"
    return "the chance loss of loss.kind " + repr(kind)


class ActivityCheck:
    """Spike counts summed over an epoch; ``end_epoch`` returns the warning line ("" when none) and
    raises ``error`` once the loss has been at chance for ``STOP_AFTER`` epochs in a row."""

    def __init__(self, net, cfg, error=RuntimeError):
        self.net, self.cfg, self.error = net, cfg, error
        self.counts, self.samples, self.at_chance = {}, 0, 0

    def start_epoch(self):
        self.counts, self.samples = {}, 0

    def batch(self, spike_counts, n_samples):
        for name, c in (spike_counts or {}).items():
            self.counts[name] = self.counts.get(name, 0.0) + float(c)
        self.samples += n_samples

    def rates(self) -> dict:
        T = self.cfg["data"]["T"]
        sizes = {layer.name: layer.size for layer in self.net.layers}
        return {n: c / max(self.samples * T * sizes[n], 1) for n, c in self.counts.items() if n in sizes}

    def end_epoch(self, epoch, train_loss, test_acc) -> str:
        line = check(self.net, self.cfg, self.rates() if self.samples else {}, train_loss, test_acc, epoch)
        self.at_chance = self.at_chance + 1 if "at chance" in line else 0
        if self.at_chance >= STOP_AFTER:
            raise self.error(f"stopped: the loss has been at chance for {STOP_AFTER} epochs; "
                             f"{line.split(': ', 2)[-1]}")
        return line
