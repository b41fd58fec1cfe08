"""``stopnp compare`` argument parsing (the work is in compare.py)."""


def register(sub):
    p = sub.add_parser("compare", help="train every learning rule on equal terms and tabulate",
                       description="Train STOP, BPTT, SLTT, SLTT-K, OTTT and BPSTA on the built-in MNIST subset (LeNet-5, "
                                   "each rule with its recipe from examples/configs/rule-*.toml, same seed and "
                                   "epochs), then write plots/compare.md, compare.json, compare_accuracy.png and "
                                   "compare_memory_vs_T.png.")
    p.add_argument("--rules", default="stop,bptt,sltt,sltt-k,ottt,bpsta", help="comma list of rules")
    p.add_argument("--epochs", type=int, default=3, help="epoch budget per rule (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare", help="run directories (one per rule)")
    p.add_argument("--plots", default="plots", help="where the table and figures go")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-vs-T sweep")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra override applied to every rule (e.g. data.limit_train=2000)")
    p.set_defaults(func=cmd)


def cmd(args):
    from .compare import compare
    compare(args.rules.split(","), args.epochs, args.seed, args.out, args.plots, not args.no_memory,
            tuple(args.overrides))
    return 0
