"""The ``keyloom`` command: ``providers``, ``doctor``, ``login``, ``demo`` and ``new-provider``.

Each subcommand lives in its own module (``new-provider`` in ``new_provider``) exposing
``add_arguments(parser)`` and ``run(args) -> int``; a module is imported only when its
subcommand runs, so the command starts fast.

Plugins add commands through the ``keyloom.commands`` entry-point group: ``tiktok =
"keyloom_tiktok.cli:main"`` makes ``keyloom tiktok ARGS…`` call ``main([ARGS…])``, which
returns the exit code. A plugin command never shadows a built-in one.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

COMMANDS = {
    "providers": "list the installed provider plugins",
    "doctor": "check a configuration before your users do",
    "login": "sign in from the terminal over a loopback redirect",
    "demo": "run the demo app (against a local emulator when no credentials are set)",
    "new-provider": "generate a provider plugin distribution (module, emulator, tests)",
}


COMMANDS_GROUP = "keyloom.commands"


def _plugin_command(name: str) -> Callable[[list[str]], int] | None:
    """The ``main`` of the plugin command *name*, or ``None`` if no plugin offers one."""
    for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP, name=name):
        command: Callable[[list[str]], int] = ep.load()
        return command
    return None


def _plugin_commands() -> list[str]:
    return sorted(
        {ep.name for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)} - set(COMMANDS)
    )


def _module(command: str) -> str:
    return f"keyloom_core.cli.{command.replace('-', '_')}"


def _parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(prog="keyloom", description="Keyloom command line.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name == chosen:
            importlib.import_module(_module(name)).add_arguments(sub)
    for name in _plugin_commands():
        text = f"'{name}' commands of an installed plugin"
        subparsers.add_parser(name, help=text, add_help=False)
    return parser, chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and not args_list[0].startswith("-") and args_list[0] not in COMMANDS:
        command = _plugin_command(args_list[0])
        if command is not None:
            try:
                return command(args_list[1:])
            except KeyboardInterrupt:
                return 130
    parser, chosen = _parser(args_list)
    args = parser.parse_args(args_list)
    if args.command is None or chosen is None:
        parser.print_help()
        return 2
    # Plugin problems are reported by the commands (keyloom providers lists them all), not
    # by logging's last-resort handler; an app's own logging configuration still sees them.
    logging.getLogger("keyloom.plugins").addHandler(logging.NullHandler())
    module = importlib.import_module(_module(args.command))
    try:
        code: int = module.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
