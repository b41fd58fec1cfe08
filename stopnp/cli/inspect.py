"""``stopnp inspect``: argument parsing; the work is in stopnp/tools/inspect.py."""
import os


def register(sub):
    p = sub.add_parser("inspect", help="dump δ, traces and ΔW/Δθ/Δα per layer and step for one batch",
                       description="Run one batch of the checkpoint's data through STOP, write per-layer, "
                                   "per-step δ, U, s, traces and gradient contributions to HDF5, and print "
                                   "spike rates, gradient norms and the cosine to the BPTT gradient.\n\n"
                                   "The file: records/<layer>.<u|s|delta|th_trace|al_trace> and "
                                   "records/<synapse>.w_trace, each (T, B, ...); per_step/<param>: that "
                                   "step's gradient contribution (ΔW[t] = Σ_b δ[t] ⊗ w~[t], Δθ[t] = "
                                   "Σ_b δ[t]·(th~[t] - 1), Δα[t] = mean_j Σ_b δ[t]·al~[t]), (T, ...param "
                                   "shape); grads/<param> = Σ_t per_step; bptt/<param>: BPTT's gradient "
                                   "on the same batch; inputs/x (T, B, ...) and inputs/y; attrs: table "
                                   "(JSON, the printed rows), checkpoint and split.")
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="output HDF5 (default: plots/inspect.h5)")
    p.add_argument("--batch", type=int, default=16, help="samples in the batch (default 16)")
    p.add_argument("--split", default="test", choices=["train", "test"],
                   help="dataset split the batch is taken from (default test; its first samples)")
    p.set_defaults(func=cmd)


def cmd(args):
    import numpy as np
    from .. import data
    from ..run.resume import load_network
    from ..tools.inspect import check_inspectable, format_table, inspect_batch, write_h5
    net, _ = load_network(args.checkpoint)
    check_inspectable(net, args.checkpoint)
    d = net.config["data"]
    src = data.load(d["name"], args.split)
    x, y = next(iter(data.batches(src, args.batch, d["T"], shuffle=False, dtype=np.float64)))
    net = net.astype(np.float64)
    records, steps, grads, ref, table = inspect_batch(net, np.ascontiguousarray(x), y)
    out = args.out or os.path.join("plots", "inspect.h5")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    write_h5(out, records, steps, grads, ref, table, {"checkpoint": os.path.abspath(args.checkpoint),
                                                       "split": args.split}, inputs={"x": x, "y": y})
    print(format_table(table))
    print(f"wrote {out}")
    return 0
