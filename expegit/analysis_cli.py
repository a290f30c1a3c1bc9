"""`expegit rerun` and `expegit compare`: reproducing an execution and asking why two differ (thin)."""
from __future__ import annotations

import argparse
import sys

from orchestra.errors import UsageError
from runaway.backend import LEAVE_POLICIES

from .completion import complete_execution_ids, complete_profiles

NAME = "analysis_cli"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rerun", help="run executions again: same parameters, same code commit (or --at another)")
    p.add_argument("ids", nargs="*", metavar="ID", help="execution ids or unique prefixes"
                   ).completer = complete_execution_ids  # type: ignore[attr-defined]
    p.add_argument("--failed", action="store_true",
                   help="every failed execution not rerun yet (a failed rerun is rerun, not its original)")
    p.add_argument("--at", metavar="COMMIT", help="run this code commit instead (to check a fix)")
    p.add_argument("--profile", metavar="NAME", help="where to run (default: where the original ran)"
                   ).completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--slots", type=int, metavar="N", help="executions at once")
    p.add_argument("--leave", choices=LEAVE_POLICIES, default="none", help="as for run")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-execution lines, only the summary")
    p.set_defaults(extension=NAME, needs_gevent=True)

    p = sub.add_parser("compare", help="two executions side by side: parameters, code, environment, metrics, "
                                       "outputs")
    for name in ("a", "b"):
        p.add_argument(name, metavar=name.upper(), help="an execution id or a unique prefix"
                       ).completer = complete_execution_ids  # type: ignore[attr-defined]
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(extension=NAME)


def dispatch(args: argparse.Namespace) -> int:
    from .campaign import open_campaign

    campaign = open_campaign(args.directory)
    if args.command == "compare":
        from .compare import compare_executions, render_json, render_text

        comparison = compare_executions(campaign, args.a, args.b)
        sys.stdout.write(render_json(comparison) if args.json else render_text(comparison))
        return 0
    from orchestra.progress import Progress

    from .cli import _report_summary
    from .rerun import rerun_campaign

    if args.slots is not None and args.slots < 1:
        raise UsageError(f"--slots {args.slots}: must be at least 1")
    summary, pairs = rerun_campaign(campaign, args.ids, failed=args.failed, at=args.at, profile=args.profile,
                                    slots=args.slots, leave=args.leave,
                                    progress=lambda: Progress(0, sys.stderr, quiet=args.quiet))
    if summary.total == 0:
        print("expegit: nothing to rerun", file=sys.stderr)
        return 0
    for original, new in pairs:
        print(f"{original} -> {new}")
    return _report_summary(summary)


__all__ = ["add_parsers", "dispatch"]
