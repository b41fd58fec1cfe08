"""``stopnp data``: get, convert and inspect datasets (argument parsing only)."""
import json


def register(sub):
    p = sub.add_parser("data", help="download, convert and inspect datasets",
                       description="Datasets: `get` downloads (resumable, checksummed) and converts to HDF5 "
                                   "under data/cache/; `convert` turns local original files into a cache; "
                                   "`info` summarises a cache file. The built-in MNIST subset needs nothing.")
    ds = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    g = ds.add_parser("get", help="download and convert a dataset",
                      description="Download MNIST, Fashion-MNIST, CIFAR-10 or CIFAR-100 and convert it; for "
                                  "nmnist, dvsgesture and cifar10-dvs print where to obtain them.")
    g.add_argument("name", help="mnist, fashion-mnist, cifar10, cifar100, nmnist, dvsgesture, cifar10-dvs")
    g.add_argument("--root", help="folder for the original files (default data/raw/NAME)")
    g.add_argument("--url", help="base URL of a mirror holding the same files")
    g.set_defaults(func=cmd)
    c = ds.add_parser("convert", help="convert local original files to an HDF5 cache",
                      description="Convert original files (IDX, CIFAR binary, N-MNIST folders) to data/cache/NAME.h5.")
    c.add_argument("name")
    c.add_argument("root", help="folder with the original files")
    c.add_argument("--T", type=int, help="frames per sample (event data)")
    c.add_argument("--by", choices=["time", "count"], default="time", help="bin events by time or count")
    c.add_argument("--denoise", type=int, default=0, metavar="DT_US", help="background-activity filter window")
    c.add_argument("--size", type=int, help="downsample event frames to SIZE x SIZE (e.g. 48 for CIFAR10-DVS)")
    c.set_defaults(func=cmd)
    i = ds.add_parser("info", help="summarise a cache file", description="Shapes, class counts and attributes.")
    i.add_argument("file")
    i.set_defaults(func=cmd)
    p.set_defaults(func=cmd, _parser=p)


def cmd(args):
    from . import download, info
    which = getattr(args, "data_command", None)
    if which is None:
        args._parser.print_help()
        return 0
    if which == "get":
        print(f"wrote {download.get(args.name, args.root, args.url)}")
    elif which == "convert":
        path = download.convert(args.name, args.root, T=args.T, size=args.size, by=args.by, denoise_dt=args.denoise)
        print(f"wrote {path}")
    else:
        print(json.dumps(info(args.file), indent=2, default=str))
    return 0
