"""What every Orchestra CLI shares: error mapping to exit codes, --debug, and gevent set-up."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from .errors import EXIT_INTERRUPTED, OrchestraError


def patch_gevent() -> None:
    """Monkey-patch the standard library for gevent: only ever called from CLI entry points."""
    from importlib import metadata

    from gevent import monkey

    if monkey.is_module_patched("socket"):
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


def run_main(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
             dispatch: Callable[[argparse.Namespace], int]) -> int:
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("ORCHESTRA_DEBUG") == "1"
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
