"""``mmldm`` entry point.

Each command lives in its own module under ``mmldm.cli`` exposing
``register(subparsers)``; the parser it adds sets ``func`` (called with the
parsed namespace, returns an exit code or None). Only the module of the command
being run is imported (:data:`~mmldm.cli.commands.COMMANDS` lists the others by
name and help), so ``mmldm --help`` and ``mmldm COMMAND --help`` start without
torch.

Errors: an :class:`~mmldm.errors.MMLDMError` (or an OS error such as a missing
file) prints one line ``mmldm: error: ...`` and exits non-zero. Anything else is
a bug: one line too, with ``--debug`` to show the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import ConfigError, MMLDMError
from .commands import COMMANDS


class UsageError(ConfigError):
    """A command line argparse refuses (unknown option, invalid int, missing required option)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``mmldm: error:`` line (not usage text plus exit)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("mmldm").strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``mmldm`` parser, with the full parser of the command ``argv`` names (its first word
    that is not an option); every other command is listed by name and help only."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = _Parser(
        prog="mmldm",
        description="MM-LDM: sounding video generation (joint audio + video latent diffusion).",
    )
    parser.add_argument("--version", action="version", version=f"mmldm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if name == command:
            importlib.import_module(f"{__package__}.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug is accepted anywhere on the line (``mmldm generate ... --debug`` too), not only
    # before the command, where the top-level parser would place it.
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if args.command is None else 2
        code = args.func(args)
        return int(code or 0)
    except MMLDMError as exc:
        if debug:
            raise
        print(f"mmldm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"mmldm: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmldm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if debug:
            raise
        from ..files import write_failure_message

        failed_write = write_failure_message(exc)  # a full disk, however the library reports it
        if failed_write is not None:
            print(f"mmldm: error: {failed_write}", file=sys.stderr)
            return 2
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"mmldm: internal error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
