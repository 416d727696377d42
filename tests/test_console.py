"""The ``facefill`` console entry point: dispatch to each command's ``main(argv)``."""

import os
import subprocess
import sys

import pytest

from bench import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyproject_declares_the_entry_point():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["facefill"] == "bench.console:main"


def test_dispatch_passes_the_arguments_and_the_status(monkeypatch):
    seen = []
    monkeypatch.setattr(console, "resolve", lambda cmd: lambda argv: seen.append((cmd, argv)) or 3)
    assert console.main(["compare", "a", "b", "--strict"]) == 3
    assert seen == [("compare", ["a", "b", "--strict"])]


def test_every_installed_command_resolves_to_its_main():
    import bench.harness.run
    import bench.report.tables

    assert console.resolve("run") is bench.harness.run.main
    assert console.resolve("report") is bench.report.tables.main
    for cmd, (modules, _) in console.COMMANDS.items():
        try:
            fn = console.resolve(cmd)
        except console.CommandUnavailable as e:  # a command whose module this tree does not have yet
            assert e.module == modules[-1]
            continue
        assert callable(fn) and fn.__name__ == "main"


def test_a_missing_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(console.COMMANDS, "ghost", (("bench.no_such_module",), "absent"))
    assert console.main(["ghost"]) == 2
    assert (
        capsys.readouterr().err
        == "error: command 'ghost' is not available in this install (no module bench.no_such_module)\n"
    )


def test_an_import_error_inside_a_module_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "facefill_broken_cmd.py").write_text("import facefill_no_such_dependency\ndef main(argv): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(console.COMMANDS, "broken", (("facefill_broken_cmd",), "broken"))
    with pytest.raises(ModuleNotFoundError, match="facefill_no_such_dependency"):
        console.main(["broken"])


@pytest.mark.parametrize(
    "argv,code,stream,text",
    [
        ([], 2, "err", "usage: facefill COMMAND"),
        (["--help"], 0, "out", "gpu-check"),
        (["nope"], 2, "err", "error: unknown command 'nope' (choose from run, report,"),
    ],
)
def test_usage_and_bad_commands(argv, code, stream, text, capsys):
    assert console.main(argv) == code
    assert text in getattr(capsys.readouterr(), stream)


def test_module_runs_a_command_end_to_end(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench.console", "report", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'nope'} is not a run directory"
