"""Packaged recipes: the TOML configs shipped inside the package (stopnp/resources/configs/NAME.toml).

    names() -> list[str]          every packaged recipe, sorted ("mnist-lenet5", "rule-stop", ...)
    path(name) -> str             the packaged file of one recipe; unknown name: ConfigError listing them
    locate(text) -> str           a recipe argument as the user typed it: an existing file path, else a
                                  packaged name (with or without ".toml")
    summary(name) -> str          the recipe's first comment line

Package data is found with importlib.resources, never relative to a source checkout, so the same code
works from a wheel, an editable install and a zip-free site-packages.
"""
import os
from importlib import resources

from .config import ConfigError

SUFFIX = ".toml"


def _folder():
    return resources.files("stopnp").joinpath("resources", "configs")


def names() -> list[str]:
    return sorted(p.name[:-len(SUFFIX)] for p in _folder().iterdir() if p.name.endswith(SUFFIX))


def path(name: str) -> str:
    stem = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
    if stem not in names():
        raise ConfigError(f"unknown recipe {name!r}; packaged recipes: {', '.join(names())} "
                          f"(or give a config file path)")
    return os.fspath(_folder().joinpath(stem + SUFFIX))


def locate(text: str) -> str:
    """An existing file wins; otherwise ``text`` must name a packaged recipe. A path-like argument
    (a folder separator, or a .json ending) that does not exist is reported as a missing file."""
    if os.path.isfile(text):
        return text
    stem = text[:-len(SUFFIX)] if text.endswith(SUFFIX) else text
    if os.path.sep not in text and "/" not in text and not text.endswith(".json") and stem in names():
        return path(stem)
    looks_like_path = os.path.sep in text or "/" in text or text.endswith(".json")
    what = "config file not found" if looks_like_path else "no such config file or packaged recipe"
    raise ConfigError(f"{text}: {what}; pass an existing TOML/JSON file or one of the packaged recipes: "
                      f"{', '.join(names())} (stopnp recipes list)")


def summary(name: str) -> str:
    with open(path(name), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
    return ""
