"""``stopnp data``: get, convert and inspect datasets (argument parsing only; the work is in
``download.get``, ``download.convert`` and ``stopnp.data.info``).

    register(subparsers)   adds the ``data`` command to the top-level parser
    main(args) -> int      runs a parsed ``data`` command (exit status)
"""
import argparse
import json

DATA_DIR_HELP = ("data folder: datasets are <DIR>/cache/NAME.h5, downloads <DIR>/raw/NAME (default: "
                 "$STOPNP_DATA, else the user cache folder, e.g. ~/.cache/stopnp)")
DOWNLOADABLE = "mnist, fashion-mnist, cifar10, cifar100"
MANUAL = "nmnist, dvsgesture, cifar10-dvs"
SIMULATED = "nmnist-builtin"


def add_data_dir(parser, default=argparse.SUPPRESS):
    """``--data-dir DIR`` on ``parser``; SUPPRESS leaves a value given before the command in place."""
    parser.add_argument("--data-dir", metavar="DIR", default=default, help=DATA_DIR_HELP)


def register(sub):
    p = sub.add_parser(
        "data", help="download, convert and inspect datasets",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Datasets. `get` downloads (resumable, checksummed) and converts to one HDF5 file in the\n"
                    "data folder; `convert` turns original files you already have into such a cache; `info`\n"
                    "summarises a cache file. The built-in MNIST set (data.name = 'mnist-builtin') ships with\n"
                    "the package and needs none of this.\n\n"
                    "The data folder: --data-dir DIR, else the environment variable STOPNP_DATA, else the user\n"
                    "cache folder (Linux: $XDG_CACHE_HOME/stopnp or ~/.cache/stopnp; macOS:\n"
                    "~/Library/Caches/stopnp; Windows: %LOCALAPPDATA%\\stopnp\\Cache). Caches are\n"
                    "DIR/cache/NAME.h5 (data.name = NAME finds them), downloads DIR/raw/NAME/.",
        epilog="examples:\n  stopnp data get fashion-mnist\n"
               "  stopnp data get nmnist-builtin              N-MNIST-like events from the built-in digits\n"
               "  stopnp data convert nmnist ~/Downloads/nmnist --T 8\n"
               "  stopnp data convert cifar10-dvs ~/Downloads/cifar10-dvs --T 10 --size 48\n"
               "  STOPNP_DATA=/srv/datasets stopnp data get cifar10\n"
               "  stopnp data info mnist-builtin")
    ds = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    g = ds.add_parser("get", help="download and convert a dataset",
                      description=f"Download {DOWNLOADABLE} from their official addresses (or --url), verify "
                                  f"the checksums, and convert to DIR/cache/NAME.h5 in the data folder. An "
                                  f"interrupted download resumes. For {MANUAL} (registration or manual "
                                  f"download needed) it prints where to obtain them and the folder layout "
                                  f"`convert` expects. "
                                  f"{SIMULATED} is simulated offline: three saccades over the built-in digits seen "
                                  f"by an emulated event camera, written as DIR/cache/{SIMULATED}.h5 (T = 8 "
                                  f"frames by time, as the recipe nmnist reads; other settings give "
                                  f"{SIMULATED}-T<T>[-<SIZE>px][-count].h5).")
    g.add_argument("name", metavar="NAME", help=f"{DOWNLOADABLE}, {MANUAL}, {SIMULATED}")
    g.add_argument("--root", help="folder for the original files (default DIR/raw/NAME in the data folder); "
                                  f"{SIMULATED}: also write the recordings there as N-MNIST .bin files "
                                  f"(ROOT/Train/<digit>/<index>.bin, ROOT/Test/...)")
    g.add_argument("--url", metavar="BASE", help="base URL of a mirror holding the same file names")
    g.add_argument("--cache-dir", help="folder for the HDF5 cache (default DIR/cache in the data folder)")
    add_data_dir(g)
    s = g.add_argument_group(f"{SIMULATED} only")
    s.add_argument("--T", type=int, help="frames per sample (default 8)")
    s.add_argument("--by", choices=["time", "count"], help="cut each recording into T equal time spans (default) "
                                                            "or T equal event counts")
    s.add_argument("--size", type=int, help="sensor side in pixels (default 34; the digit and its motion scale "
                                            "with it)")
    s.add_argument("--seed", type=int, help="seed of the emulated sensor and its noise (default: a fixed "
                                            "seed: every machine makes the same set)")
    s.add_argument("--limit", type=int, help="only the first N digits of each split (quick tries)")
    s.add_argument("--force", action="store_true", help="replace a cache made with other settings")
    g.set_defaults(func=main)
    c = ds.add_parser("convert", help="convert local original files to an HDF5 cache",
                      description="Convert original files under ROOT to DIR/cache/NAME[-T..].h5 in the data "
                                  "folder: MNIST / Fashion-MNIST IDX files, CIFAR binary or python version "
                                  "(archive or folder), N-MNIST (ROOT/Train/0..9/*.bin), DVS128 Gesture "
                                  "(AEDAT 3.1 + *_labels.csv, or tonic's ROOT/<split>/<class>/*.npy), "
                                  "CIFAR10-DVS (ROOT/<class>/*.aedat). Event data are binned into T frames of 2 "
                                  "polarity channels. A finished cache is reused.")
    c.add_argument("name", metavar="NAME", help=f"{DOWNLOADABLE}, {MANUAL}")
    c.add_argument("root", metavar="ROOT", help="folder (or archive, for CIFAR) with the original files")
    c.add_argument("--T", type=int, help="frames per sample (event data; default 8 / 20 / 10)")
    c.add_argument("--by", choices=["time", "count"], default="time",
                   help="cut each recording into T equal time spans or T equal event counts")
    c.add_argument("--denoise", type=int, default=0, metavar="DT_US",
                   help="drop events with no 8-neighbour event within DT_US microseconds before (0 = off)")
    c.add_argument("--size", type=int, help="downsample event frames to SIZE x SIZE (e.g. 48 for CIFAR10-DVS)")
    c.add_argument("--cache-dir", help="folder for the HDF5 cache (default DIR/cache in the data folder)")
    add_data_dir(c)
    c.set_defaults(func=main)
    i = ds.add_parser("info", help="summarise a cache file",
                      description="Print shapes, dtypes, per-class counts and attributes (provenance, checksums, "
                                  "binning) of a cache file, as JSON.")
    i.add_argument("file", help="path of an .h5 cache, or a dataset name (mnist-builtin, a cache in the data "
                                "folder)")
    add_data_dir(i)
    i.set_defaults(func=main)
    p.set_defaults(func=main, _parser=p)
    return p


def main(args) -> int:
    from ..data import download, info
    which = getattr(args, "data_command", None)
    data_dir = getattr(args, "data_dir", None)
    if which is None:
        args._parser.print_help()
        return 0
    if which == "get":
        given = {k: getattr(args, k, None) for k in ("T", "by", "size", "seed", "limit", "force")}
        simulate = {k: v for k, v in given.items() if v not in (None, False)}
        if args.name == SIMULATED or args.name.startswith(SIMULATED + "-"):
            simulate["progress"] = _progress_bars()
        path = download.get(args.name, args.root, args.url, cache_dir=args.cache_dir, data_dir=data_dir, **simulate)
        print(f"wrote {path}")
    elif which == "convert":
        path = download.convert(args.name, args.root, cache_dir=args.cache_dir, T=args.T, size=args.size,
                                by=args.by, denoise_dt=args.denoise, data_dir=data_dir)
        print(f"wrote {path}")
    else:
        print(json.dumps(info(args.file, data_dir=data_dir), indent=2, default=str))
    return 0


def _progress_bars():
    """A progress(split, done, total) callback drawing one bar per split on stderr."""
    from ..run.progress import Progress
    bars = {}

    def progress(split, done, total):
        bar = bars.setdefault(split, Progress(total, f"simulating {split}"))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return progress

