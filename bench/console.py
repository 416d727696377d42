"""The ``facefill`` command: one entry point over the harness's ``python -m`` commands.

``facefill COMMAND [ARGS ...]`` runs ``COMMAND``'s module's ``main(ARGS)`` and exits with its
status; ``facefill run --masks all`` is ``python -m bench.run --masks all``. Modules are
imported only when their command runs (``facefill --help`` starts no torch), by name, so a
command whose module this install lacks says so in one line (exit 2) instead of failing at
start-up. ``python -m bench.console`` is the same command without the installed script.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# command -> (candidate modules, first found wins; one-line description)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "run": (("bench.harness.run",), "run a benchmark into a new run directory"),
    "report": (("bench.report.tables",), "tables, figures and report.html of a run directory"),
    "compare": (("bench.report.compare",), "compare two run directories' records"),
    "paired": (("bench.report.paired",), "paired differences of methods against a base method in a run"),
    "export": (("bench.harness.export",), "export a run's images and masks to folders"),
    "score": (("bench.harness.score",), "score a folder of completions into records"),
    "train": (("facefill_core.train",), "train the DCGAN, CE or GFC models"),
    "heldout": (("bench.studies.heldout",), "held-out curves of a CE/GFC training run"),
    "prior-quality": (("bench.studies.prior_quality",), "how well the DCGAN prior reproduces test faces"),
    "gpu-check": (("bench.gpu.check",), "the GPU battery (CPU half without CUDA) into a new directory"),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: facefill COMMAND [ARGS ...]   (facefill COMMAND --help for a command's flags)", "", "commands:"]
    lines += [f"  {c:<{width}}  {desc}" for c, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


class CommandUnavailable(LookupError):
    """A command whose module this install does not have (``.module``: the last one tried)."""

    def __init__(self, command: str, module: str) -> None:
        super().__init__(f"command {command!r} is not available in this install (no module {module})")
        self.module = module


def resolve(command: str):
    """The ``main`` function of ``command``'s module (the first of its candidates that exists).

    Raises:
        KeyError: an unknown command.
        CommandUnavailable: none of its modules exists.
        ModuleNotFoundError: a module exists but one of its own imports is missing (a real error,
            not hidden).
    """
    modules, _ = COMMANDS[command]
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise
            continue
        return module.main
    raise CommandUnavailable(command, modules[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        fn = resolve(command)
    except CommandUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.argv = [f"facefill {command}", *rest]  # what a main that reads sys.argv itself sees
    code = fn(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
