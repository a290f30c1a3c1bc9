"""`expegit report`: render the campaign's static HTML report (thin wrapper over report_build)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "report_cli"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render the static HTML report of every execution branch")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where the site goes (default: .git/orchestra/report of the campaign)")
    p.add_argument("--open", action="store_true", help="open it in a web browser")
    p.set_defaults(extension=NAME)


def _store(directory: str):
    from orchestra.errors import RepositoryError

    from .gitstore import GitStore

    try:
        return GitStore.discover(directory)
    except RepositoryError:
        try:  # a bare repository (e.g. the shared remote) has no .git inside
            return GitStore(Path(directory))
        except RepositoryError:
            pass
        raise


def dispatch(args: argparse.Namespace) -> int:
    from .report_build import render_report

    store = _store(args.directory)
    out = Path(args.directory) / args.output if args.output else None
    index, data, problems = render_report(store, out)
    for execution_id, problem in sorted(problems.items())[:10]:
        print(f"expegit: warning: executions/{execution_id} left out: {problem}", file=sys.stderr)
    print(f"expegit: report of {len(data.executions)} executions: {index}", file=sys.stderr)
    print(index)
    if args.open:
        import webbrowser

        webbrowser.open(index.as_uri())
    return 0


__all__ = ["add_parsers", "dispatch"]
