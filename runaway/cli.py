"""`runaway`: run the current directory's code on a profile, without a campaign. Thin: parse, call, map errors.

    runaway exec PROFILE [--results DIR] [--timeout S] [--cpus N] [--gpus N] [--memory SIZE] -- CMD [ARGS...]   (one word: a shell command line)
    runaway batch PROFILE --params FILE [--results DIR] [--slots N] -- CMD {name} ...
    runaway test PROFILE [--timeout S]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestra.cli import add_common_arguments, patch_gevent, run_main
from orchestra.durations import parse_duration
from orchestra.errors import UsageError

from .completion import complete_profiles


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runaway", description="Run this directory's code on a profile (local, ssh, slurm) and bring the "
                                    "results back. Profiles come from ./orchestra.yaml and "
                                    "~/.config/orchestra/profiles/NAME.yaml.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_common_arguments(parser, sub)

    p = sub.add_parser("exec", help="run one command on one slot, output streamed live, results brought back")
    p.add_argument("profile").completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--results", type=Path, metavar="DIR",
                   help="bring created/changed files here (default: the current directory)")
    p.add_argument("-o", "--output", dest="outputs", action="append", default=[], metavar="GLOB",
                   help="only bring back files matching this glob (repeatable; default: every created/changed file)")
    p.add_argument("--timeout", type=_duration, metavar="DURATION", help="stop the command after this long")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set this environment variable for the command (repeatable)")

    _resource_options(p)
    p = sub.add_parser("batch", help="one execution per line of a parameter file; results in per-line dirs")
    p.add_argument("profile").completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--params", type=Path, required=True, metavar="FILE",
                   help="lines of NAME=VALUE words (e.g. `lr=0.1 seed=3`), substituted into {NAME} placeholders")
    p.add_argument("--results", type=Path, metavar="DIR", help="per-line result directories go here "
                                                               "(default: ./runaway-results)")
    p.add_argument("-o", "--output", dest="outputs", action="append", default=[], metavar="GLOB")
    p.add_argument("--slots", type=int, metavar="N", help="executions at once (local profiles)")
    p.add_argument("--timeout", type=_duration, metavar="DURATION", help="per execution")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    _resource_options(p, placeholders=True)

    p = sub.add_parser("test", help="check a profile: connection, allocation, nodes, one trivial run")
    p.add_argument("profile").completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--timeout", type=_duration, default=120.0, metavar="DURATION", help="per step (default 120s)")
    return parser


def _words(cmd: list[str]) -> list[str]:
    if not cmd:
        raise UsageError("no command given", hint="put the command after --, e.g. runaway exec PROFILE -- python train.py")
    return cmd


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"-e {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _resource_options(p: argparse.ArgumentParser, placeholders: bool = False) -> None:
    """The manifest's `resources:` as options: the execution is packed and bound by them (local profiles)."""
    fill = ' or a {column} of the parameter file' if placeholders else ''
    p.add_argument("--cpus", metavar="N", help=f"cores, bound by CPU affinity{fill}")
    p.add_argument("--gpus", metavar="N", help=f"GPUs (a fraction like 0.25 shares one){fill}")
    p.add_argument("--memory", metavar="SIZE", help=f"memory like 16G (an address-space limit){fill}")


def _resources(args: argparse.Namespace) -> dict[str, str] | None:
    given = {key: getattr(args, key) for key in ("cpus", "gpus", "memory") if getattr(args, key) is not None}
    return given or None


def _dispatch(args: argparse.Namespace) -> int:
    from runaway import exec as api

    if args.command in ("exec", "batch") and args.cmd is None:
        raise UsageError(f"runaway {args.command}: no command given",
                         hint=f"put it after --: runaway {args.command} {args.profile} [options] -- CMD ARGS")

    cwd = Path.cwd()
    if args.command == "exec":
        return api.exec_command(args.profile, _words(args.cmd), cwd=cwd,
                                results=args.results.resolve() if args.results else None,
                                outputs=args.outputs, timeout=args.timeout, env=_env(args.env),
                                resources=_resources(args))
    if args.command == "batch":
        return api.batch_command(args.profile, _words(args.cmd), args.params, cwd=cwd,
                                 results=args.results.resolve() if args.results else None,
                                 outputs=args.outputs, timeout=args.timeout, slots=args.slots,
                                 env=_env(args.env), resources=_resources(args))
    if args.command == "test":
        from runaway.check import test_profile

        return test_profile(args.profile, cwd=cwd, timeout=args.timeout)
    raise UsageError(f"unknown command {args.command!r}")


def _dispatch_patched(args: argparse.Namespace) -> int:
    patch_gevent()  # the CLI entry point only: the library never patches
    return _dispatch(args)


def main(argv: Sequence[str] | None = None) -> int:
    # Everything after the first `--` is the remote command, verbatim: argparse must not see its options.
    words = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] | None = None
    if "--" in words:
        at = words.index("--")
        words, cmd = words[:at], words[at + 1:]

    def dispatch(args: argparse.Namespace) -> int:
        args.cmd = cmd
        return _dispatch_patched(args)

    return run_main("runaway", _parser(), words, dispatch)


if __name__ == "__main__":
    sys.exit(main())
