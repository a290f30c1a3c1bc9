"""What every Orchestra CLI shares: error mapping to exit codes, --debug, and gevent set-up."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .errors import EXIT_INTERRUPTED, OrchestraError


# Set by run_main from --debug (or ORCHESTRA_DEBUG=1) before a command runs.
_debug = False


def quiet_greenlet_errors() -> None:
    """Keep gevent's hub from printing the traceback of every greenlet that dies with an exception.

    Why: the hub prints them as they happen, although the error is re-raised where the greenlet is joined
    and reported there as one line. An unreachable host printed about 70 lines of raw tracebacks before
    its one-line error. With --debug they are printed as before.
    """
    if _debug:
        return
    import gevent

    gevent.get_hub().exception_stream = None


def patch_gevent() -> None:
    """Monkey-patch the standard library for gevent: only ever called from CLI entry points."""
    from importlib import metadata

    from gevent import monkey

    if monkey.is_module_patched("socket"):
        quiet_greenlet_errors()
        return
    # patch_all announces each of its ~25 patches to plugins found through entry points, and every
    # announcement rescans all installed distributions (0.5 s on a machine with a few hundred packages).
    # One scan serves them all: the set of installed distributions cannot change meanwhile.
    scanned = metadata.entry_points()
    original = metadata.entry_points
    metadata.entry_points = lambda **params: scanned.select(**params) if params else scanned  # type: ignore[assignment]
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = original
    quiet_greenlet_errors()  # after patching: the hub is made on first use, which must see patched threading


def version() -> str:
    """The installed distribution's version (one definition: setup.py's)."""
    from importlib import metadata

    try:
        return metadata.version("orchestra-campaigns")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """argparse's "version" action, with the version looked up only when asked: importlib.metadata scans
    the installed distributions (a fifth of `expegit status`'s start-up on this machine)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {version()}")  # on stdout, as argparse's own version action prints it
        parser.exit()


def add_common_arguments(parser: argparse.ArgumentParser, sub: "argparse._SubParsersAction[Any]") -> None:
    """--version and the `completion` subcommand, the same on expegit, runaway and parasearch."""
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    p = sub.add_parser("completion", help="print the shell code that completes this command (bash, zsh)",
                       description="Add to ~/.bashrc: eval \"$(PROG completion bash)\"; to ~/.zshrc: eval "
                                   "\"$(PROG completion zsh)\". Completes subcommands, options, profile names "
                                   "and execution ids.")
    p.add_argument("shell", choices=("bash", "zsh"), nargs="?", default="bash")


def _complete(parser: argparse.ArgumentParser) -> None:
    """Answer a Tab press and exit, when the shell's completion hook is what started us.

    argcomplete (a well-kept library for argparse completion in bash and zsh) is imported only then: a
    normal start pays nothing for it.
    """
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)


def run_main(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
             dispatch: Callable[[argparse.Namespace], int]) -> int:
    global _debug
    _complete(parser)  # argcomplete reads the shell's COMP_LINE, not argv
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "completion":
        import argcomplete

        sys.stdout.write(argcomplete.shellcode([prog], shell=args.shell))
        return 0
    debug = getattr(args, "debug", False) or os.environ.get("ORCHESTRA_DEBUG") == "1"
    _debug = debug
    try:
        return dispatch(args)
    except OrchestraError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `expegit list | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
