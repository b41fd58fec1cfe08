"""``stopnp recipes``: list, show or copy the packaged recipes (the work is in stopnp/recipes.py)."""
import argparse
import os
import sys


def register(sub):
    p = sub.add_parser("recipes", help="list, show or copy the packaged recipes",
                       description="The recipes shipped with stopnp (`stopnp train NAME` runs one). Copy one "
                                   "to edit it, then `stopnp train FILE`.",
                       epilog="examples:\n  stopnp recipes\n  stopnp recipes show fashion-lenet5\n"
                              "  stopnp recipes copy fashion-lenet5 my.toml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rs = p.add_subparsers(dest="recipes_command", metavar="SUBCOMMAND")
    rs.add_parser("list", help="names and one-line descriptions (the default)")
    show = rs.add_parser("show", help="print a recipe")
    show.add_argument("name", metavar="NAME")
    copy = rs.add_parser("copy", help="copy a recipe to a file or folder")
    copy.add_argument("name", metavar="NAME")
    copy.add_argument("dest", nargs="?", default=".", metavar="DEST",
                      help="file, or folder for NAME.toml (default: the current folder)")
    copy.add_argument("--force", action="store_true", help="replace an existing DEST file")
    p.set_defaults(func=cmd)


def cmd(args):
    import shutil
    from .. import recipes
    from ..config import ConfigError
    which = getattr(args, "recipes_command", None) or "list"
    if which == "list":
        names = recipes.names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {recipes.summary(name)}")
        return 0
    src = recipes.path(args.name)
    if which == "show":
        with open(src, encoding="utf-8") as f:
            sys.stdout.write(f.read())
        return 0
    dest = args.dest
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(src))
    if os.path.exists(dest) and not args.force:
        raise ConfigError(f"{dest}: exists; choose another DEST or replace it with --force")
    shutil.copyfile(src, dest)
    print(f"wrote {dest}")
    return 0
