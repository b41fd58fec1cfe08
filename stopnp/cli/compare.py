"""``stopnp compare`` argument parsing (the work is in compare.py)."""
import argparse

from ..rules import RULES


def _rules(text):
    rules = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        raise argparse.ArgumentTypeError(f"unknown rule(s) {', '.join(bad) or '(none given)'}; "
                                         f"valid: {', '.join(RULES)}")
    return rules


def register(sub):
    p = sub.add_parser(
        "compare", help="train every learning rule on equal terms and tabulate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train STOP, BPTT, SLTT, SLTT-K, OTTT and BPSTA on the built-in MNIST subset (LeNet-5, each\n"
                    "rule with its packaged recipe rule-<rule> on top of mnist-lenet5 (stopnp recipes), same\n"
                    "seed and epoch budget, one subprocess per rule), then write into --plots:\n"
                    "  compare.md / compare.json   test accuracy, training time, peak RSS, mean per-layer cosine\n"
                    "                              of the rule's weight gradient to BPTT's on one test batch\n"
                    "                              (BPSTA: to plain BPTT of its own neuron)\n"
                    "  compare_accuracy.png        test accuracy vs epoch\n"
                    "  compare_memory_vs_T.png     memory growth vs T = 4, 8, 16, 32, 64 (784-800-10 MLP)",
        epilog="example: stopnp compare --rules stop,sltt --epochs 1 --set data.limit_train=2000 --no-memory")
    p.add_argument("--rules", type=_rules, default=list(RULES), metavar="R1,R2,...",
                   help=f"comma list of rules (default: all: {','.join(RULES)})")
    p.add_argument("--epochs", type=int, default=3, help="epoch budget per rule (default 3)")
    p.add_argument("--seed", type=int, default=0, help="run.seed for every rule (default 0)")
    p.add_argument("--out", default="runs/compare", help="run directories, one per rule (default runs/compare)")
    p.add_argument("--plots", default="plots", help="where the table and figures go (default plots)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-vs-T sweep")
    p.add_argument("--force", action="store_true", help="replace earlier runs in --out (they are lost)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra override applied to every rule, repeatable (e.g. data.limit_train=2000)")
    p.set_defaults(func=cmd)


def cmd(args):
    from ..tools.compare import CompareError, compare
    if args.epochs < 1:
        raise SystemExit("stopnp compare: --epochs must be >= 1")
    try:
        compare(args.rules, args.epochs, args.seed, args.out, args.plots, not args.no_memory,
                tuple(args.overrides), overwrite=args.force)
    except CompareError as e:
        raise SystemExit(f"stopnp compare: error: {e}") from None
    return 0
