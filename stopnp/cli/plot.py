"""``stopnp plot``: argument parsing; the figures are made by stopnp/tools/report.py."""


def register(sub):
    p = sub.add_parser("plot", help="all figures of a run directory (PNG)",
                       description="Write spike rasters, membrane potentials with thresholds, STOP traces, "
                                   "θ/α across epochs, loss/accuracy curves and spike rates for a run.")
    p.add_argument("run_dir")
    p.add_argument("--out", help="figure directory (default: RUN_DIR/plots)")
    p.set_defaults(func=cmd)


def cmd(args):
    from ..tools.report import plot_run
    paths = plot_run(args.run_dir, args.out)
    for p in paths:
        print(p)
    return 0
