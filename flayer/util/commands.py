"""Commands that messages print, written so that they work as printed.

A newcomer's `python` is often not the interpreter that has flayer's packages (a virtual
environment need not be activated), so every printed command starts with the interpreter that
is running, shown relative to the current folder when it lies inside it
(`.venv/bin/python run.py resume=...`), else by its absolute path.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[2] / "run.py"  # the experiment command


def shown(path: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> str:
    """`path` relative to `cwd` (default: the current folder) when it lies inside it, else
    absolute. Links are kept: a virtual environment's python is a link that must stay one."""
    target = Path(os.path.abspath(path))
    base = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
    try:
        return str(target.relative_to(base))
    except ValueError:
        return str(target)


def interpreter(cwd: str | os.PathLike[str] | None = None) -> str:
    """The running interpreter as a command's first word (a bare name gets `./`, which the
    shell would otherwise look up on PATH)."""
    if not sys.executable:  # an embedded interpreter does not know its file
        return "python"
    here = shown(sys.executable, cwd)
    return here if os.sep in here else f".{os.sep}{here}"


def python_command(*args: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """This interpreter with `args`, quoted for a POSIX shell."""
    return shlex.join([interpreter(cwd), *args])


def run_command(*overrides: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """`run.py` with Hydra overrides, e.g. run_command("resume=RUN_DIR")."""
    return python_command(shown(RUN_PY, cwd), *overrides, cwd=cwd)


def module_command(module: str, *args: str,
                   cwd: str | os.PathLike[str] | None = None) -> str:
    """`-m module` with args, e.g. module_command("flayer.results.report", "RUNS")."""
    return python_command("-m", module, *args, cwd=cwd)
