"""`parasearch`: run, inspect and rank the study declared in ``orchestra.yaml``. Thin: parse, call one
function of :mod:`parasearch.study`, map errors to exit codes (shared with expegit)."""
from __future__ import annotations

import os

# The GP's matrices are small: threaded BLAS only doubles the time of an ask. OpenBLAS reads this when
# numpy is first imported, so it is set before anything imports numpy (parasearch/__init__ imports lazily).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from orchestra.cli import add_common_arguments, patch_gevent, run_main  # noqa: E402
from orchestra.errors import EXIT_EXECUTIONS_FAILED, UsageError  # noqa: E402
from orchestra.search import ALGORITHMS  # noqa: E402
from runaway.backend import LEAVE_POLICIES  # noqa: E402
from runaway.completion import complete_profiles  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parasearch", description="Hyper-parameter search over a campaign; its history is the campaign's "
                                       "execution branches.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-C", dest="directory", default=".", help="run as if started in this directory")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_common_arguments(parser, sub)

    p = sub.add_parser("run", help="run (or continue) the study declared under search: in orchestra.yaml")
    p.add_argument("--budget", type=int, metavar="N", help="total executions of the study (default: search.budget)")
    p.add_argument("--algorithm", metavar="A", help=f"{', '.join(ALGORITHMS)} (default: "
                                                    "search.algorithm; another algorithm is another study)")
    p.add_argument("--profile", metavar="NAME", help="where to run (default: the manifest's profile:)"
                   ).completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--parallel", type=int, metavar="K", help="executions in flight (default: search.parallel)")
    p.add_argument("--slots", type=int, metavar="N", help="backend slots (local: default the CPU count)")
    p.add_argument("--leave", choices=LEAVE_POLICIES, default="none",
                   help="run directories to keep on the host after their results are committed: none (default), "
                        "failed (to look at what a failed execution left) or all")
    p.add_argument("--snapshot", action="store_true",
                   help="run a dirty working tree: commit it to a side ref and run that (as expegit run)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-execution lines, only the summary")

    for name, text in (("status", "the study's id, executions done/failed/running against the budget, best"),
                       ("best", "the best points, objective aggregated over repeats, with their executions")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--algorithm", metavar="A", help="the study of this algorithm (default: search.algorithm)")
        p.add_argument("--budget", type=int, metavar="N", help=argparse.SUPPRESS)
        if name == "best":
            p.add_argument("--top", type=int, metavar="K", help="how many points (default 1; a multi-objective "
                                                                "study: the whole Pareto front)")
            p.add_argument("--json", action="store_true", help="a JSON array of points (a multi-objective "
                                                               "study: an object with the front)")
    return parser


def _open(args: argparse.Namespace):
    from expegit.campaign import open_campaign

    return open_campaign(args.directory)


def _run(args: argparse.Namespace) -> int:
    from orchestra.progress import Progress

    from parasearch.study import bound_notes, describe_best
    from parasearch.study_run import run_study

    for flag in ("budget", "parallel", "slots"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} {value}: must be at least 1")
    progress = Progress(0, sys.stderr, quiet=args.quiet)
    result = run_study(_open(args), algorithm=args.algorithm, budget=args.budget, parallel=args.parallel,
                       profile=args.profile, slots=args.slots, progress=progress, leave=args.leave,
                       snapshot=args.snapshot)
    summary, study = result.summary, result.study
    state, config = study.state, study.config
    parts = [f"{summary.finished} finished", f"{summary.failed} failed"]
    if result.without_objective:
        # `status` counts these as failed (the search learnt nothing from them): say so here too.
        parts[0] += f" ({result.without_objective} without a {config.metric} value, failed for the search)"
    if summary.pruned:
        parts.append(f"{summary.pruned} pruned")
    if summary.cancelled:
        parts.append(f"{summary.cancelled} stopped")
    if summary.not_started:
        parts.append(f"{summary.not_started} not started")
    print(f"parasearch: study {study.id} ({config.algorithm}): {summary.total} executions this run: "
          f"{', '.join(parts)}; {state.executions}/{config.budget} of the budget used", file=sys.stderr)
    best_point = None if config.multi else state.best()
    best = describe_best(best_point)
    volume = state.hypervolume() if config.multi else None
    if volume is not None:
        print(f"parasearch: Pareto front of {len(state.front())} point(s), hypervolume {volume[0]:.6g}; "
              f"`parasearch best` lists them", file=sys.stderr)
    if best:
        print(f"parasearch: best {config.metric} = {best}", file=sys.stderr)
    for note in bound_notes(study.space, best_point.params if best_point is not None else None):
        print(f"parasearch: note: {note}", file=sys.stderr)
    if summary.total == 0 and not result.stop_reason and not result.exhausted:
        if state.executions > config.budget:
            print(f"parasearch: the study already has {state.executions} executions, more than the budget of "
                  f"{config.budget}: nothing new was run; give --budget N with N above {state.executions} to "
                  f"continue", file=sys.stderr)
        elif state.remaining() < config.repeats:
            print(f"parasearch: the budget is spent ({state.executions}/{config.budget}): give --budget N with N "
                  f"above {state.executions}, or raise search.budget, to continue", file=sys.stderr)
    if result.stop_reason:
        print(f"parasearch: stopped asking: {result.stop_reason}", file=sys.stderr)
    elif result.exhausted:
        print("parasearch: the space is exhausted: every point was tried", file=sys.stderr)
    for error in summary.errors[:10]:
        print(f"parasearch: error: {error}", file=sys.stderr)
    if summary.interrupted:
        print("parasearch: interrupted: stopped executions were recorded as cancelled; `parasearch run` "
              "continues the study", file=sys.stderr)
    if result.objective_missing:
        return EXIT_EXECUTIONS_FAILED  # exit 0 said "all good" while the search learnt nothing
    return summary.exit_code()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        patch_gevent()
        return _run(args)
    from parasearch.study import best_rows, best_text, front_data, front_text, load_study, status_text

    study = load_study(_open(args), algorithm=args.algorithm, budget=args.budget)
    if args.command == "status":
        print(status_text(study))
        return 0
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top {args.top}: must be at least 1")
    if study.config.multi:
        data = front_data(study, args.top)
        if args.json:
            json.dump(data, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(front_text(data))
        return 0
    rows = best_rows(study, args.top or 1)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(best_text(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("parasearch", _parser(), argv, _dispatch)


if __name__ == "__main__":
    sys.exit(main())
