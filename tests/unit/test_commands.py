"""Printed commands start with the interpreter that runs, so that they work as printed."""

import os
import shlex
import sys

from flayer.util.commands import RUN_PY, module_command, python_command, run_command, shown


def test_a_path_inside_the_folder_is_shown_relative_to_it(tmp_path):
    assert shown(tmp_path / "venv" / "bin" / "python", cwd=tmp_path) == "venv/bin/python"
    assert shown("/elsewhere/python", cwd=tmp_path) == "/elsewhere/python"


def test_the_command_runs_this_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(RUN_PY.parent)
    python, script, override = shlex.split(run_command("resume=/tmp/a run"))
    assert os.path.samefile(python, sys.executable) and script == "run.py"
    assert override == "resume=/tmp/a run"  # quoted, so the shell keeps it one word
    monkeypatch.chdir(tmp_path)  # from elsewhere, the script by its full path
    assert os.path.samefile(shlex.split(run_command())[1], RUN_PY)


def test_an_interpreter_in_the_folder_itself_is_not_looked_up_on_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert python_command("-V", cwd=tmp_path) == "./python -V"
    assert module_command("flayer.results.report", "RUNS", cwd=tmp_path) == (
        "./python -m flayer.results.report RUNS")
