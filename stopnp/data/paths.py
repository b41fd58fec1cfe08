"""Where datasets live: one user data folder, never the installed package.

    data_dir(explicit=None) -> str   explicit (``--data-dir``, ``data_dir=``), else $STOPNP_DATA, else
                                     the platform's user cache folder (``user_cache_dir``)
    cache_dir(data_dir=None)         <data folder>/cache: one HDF5 file per dataset / representation
    raw_dir(name, data_dir=None)     <data folder>/raw/<name>: original downloads and archives
    builtin_path() -> str            the built-in MNIST subset: read-only package data, never copied

user_cache_dir(): Linux and other Unix $XDG_CACHE_HOME/stopnp (when absolute), else ~/.cache/stopnp;
macOS ~/Library/Caches/stopnp; Windows %LOCALAPPDATA%\\stopnp\\Cache. The ``data/`` folder of a
source checkout has the same layout (cache/, raw/), so ``STOPNP_DATA=<checkout>/data`` reuses it.
"""
import os
import sys
from importlib import resources

ENV = "STOPNP_DATA"


def user_cache_dir() -> str:
    home = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return os.path.join(base, "stopnp", "Cache")
    if sys.platform == "darwin":
        return os.path.join(home, "Library", "Caches", "stopnp")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return os.path.join(xdg if os.path.isabs(xdg) else os.path.join(home, ".cache"), "stopnp")


def data_dir(explicit=None) -> str:
    """The user data folder (absolute; not created here)."""
    chosen = explicit or os.environ.get(ENV) or user_cache_dir()
    return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


def cache_dir(explicit=None) -> str:
    return os.path.join(data_dir(explicit), "cache")


def raw_dir(name, explicit=None) -> str:
    return os.path.join(data_dir(explicit), "raw", name)


def builtin_path() -> str:
    return os.fspath(resources.files("stopnp").joinpath("resources", "mnist_builtin.h5"))
