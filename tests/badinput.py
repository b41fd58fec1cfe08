"""Bad-input corpus machinery, shared by the tests/test_bad_input_*.py modules.

A ``Corpus`` holds commands (name -> argv builder) and cases (a name, a maker that writes one small bad
input, the commands that read it, what the error must say). ``Corpus.params()`` gives one pytest
parameter per (case, command); ``refused`` runs one through the CLI in-process (``stopnp.cli.main``)
and checks the rule for bad input: exit status 2, exactly ONE line on stderr, no traceback, the line
names the file and says what to do, and every watched folder is left as it was (the input itself, a
run folder, no cache or run written).

Extending: build a ``Corpus`` with the commands that read your kind of file, ``add`` cases, and
parametrize a test over ``params()`` that calls ``refused`` (tests/test_bad_input_data.py does this).
"""
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

# what a fix sounds like: every refusal tells the user what to do, not only what is wrong
FIX = re.compile(r"\b(convert|download|delete|remove|rename|extract|fix|store|set|pass|run|lower|use|choose|start|wait|move)\b")


@dataclass(frozen=True)
class Case:
    name: str
    make: object       # make(work: Path) -> Path: writes the bad input under ``work``, returns what commands get
    commands: tuple    # names of Corpus.commands that read it
    expect: str        # regex the error line must match (what is wrong)
    culprit: str       # the file the line must name (a path suffix); "" = the basename of make's result


@dataclass
class Env:
    """What a command builder gets: the case's folder (input and any output go there), the input
    path, and the module's shared fixtures (e.g. a checkpoint)."""
    work: Path
    path: Path
    shared: dict


class Corpus:
    def __init__(self, commands):
        self.commands = dict(commands)  # name -> build(env) -> argv
        self.cases = {}

    def add(self, name, make, commands, expect, culprit=""):
        assert name not in self.cases, f"duplicate case {name}"
        unknown = set(commands) - set(self.commands)
        assert not unknown, f"{name}: unknown commands {unknown}"
        self.cases[name] = Case(name, make, tuple(commands), expect, culprit)

    def case(self, name, commands, expect, culprit=""):
        """Decorator form of ``add`` for a maker written as a function."""
        def register(make):
            self.add(name, make, commands, expect, culprit)
            return make
        return register

    def params(self):
        return [pytest.param(c, cmd, id=f"{c.name}-{cmd}") for c in self.cases.values() for cmd in c.commands]


def snapshot(*folders):
    """Every folder and file under ``folders``: {path: None (folder) or (size, sha256, mtime_ns)}."""
    out = {}
    for top in folders:
        for root, dirs, files in os.walk(top):
            out[root] = None
            for f in files:
                p = os.path.join(root, f)
                st = os.stat(p)
                with open(p, "rb") as fh:
                    out[p] = (st.st_size, hashlib.sha256(fh.read()).hexdigest(), st.st_mtime_ns)
    return out


def refused(capsys, argv, watched, expect, culprit):
    """Run the CLI; it must refuse with one line naming ``culprit`` and matching ``expect``, and change
    nothing under ``watched``. Returns the line."""
    from stopnp import cli
    before = snapshot(*watched)
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    line = lines[0]
    assert culprit in line, (culprit, line)
    assert re.search(expect, line), (expect, line)
    words = line
    for folder in watched:  # the fix is in the words, not in a folder's name
        words = words.replace(str(folder), "")
    assert FIX.search(words), f"says what is wrong but not what to do: {line}"
    assert snapshot(*watched) == before, line
    return line
