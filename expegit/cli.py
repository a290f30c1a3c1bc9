"""`expegit`: git-style subcommands over a campaign. Thin: parse, call one library function, map errors."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestra.cli import add_common_arguments, patch_gevent, run_main
from orchestra.errors import UsageError
from runaway.backend import LEAVE_POLICIES

from .completion import complete_execution_ids, complete_profiles


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expegit", description="Experimental campaigns as git repositories: every execution is a branch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-C", dest="directory", default=".", help="run as if started in this directory")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_common_arguments(parser, sub)

    p = sub.add_parser("init", help="make a campaign (new repository, or adopt an existing one)")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--example", metavar="NAME", help="create a ready-to-run example campaign (e.g. quadratic)")

    sub.add_parser("check", help="validate orchestra.yaml and print every problem with its line")

    p = sub.add_parser("run", help="create executions for HEAD and run them")
    p.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter value; repeat a name to sweep over several values")
    p.add_argument("--grid", action="store_true", help="run every point of the parameters' grid")
    p.add_argument("--missing", action="store_true",
                   help="only the points (and repeats) with no finished, running or created execution at this "
                        "commit: a second `run --grid --missing` runs what the first did not finish")
    p.add_argument("--repeat", type=int, metavar="N", help="executions per parameter point (default: repeats:)")
    p.add_argument("--profile", metavar="NAME", help="where to run (default: the manifest's profile:)"
                   ).completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--slots", type=int, metavar="N", help="executions at once (local: default the CPU count)")
    p.add_argument("--snapshot", action="store_true",
                   help="run uncommitted changes as a snapshot commit instead of refusing a dirty tree")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run; create nothing")
    p.add_argument("--leave", choices=LEAVE_POLICIES, default="none",
                   help="run directories to keep on the host after their results are committed: none (default), "
                        "failed (to look at what a failed execution left) or all")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-execution lines, only the summary")

    p = sub.add_parser("resume", help="finish what an interrupted or killed run left behind")
    p.add_argument("--slots", type=int, metavar="N")
    p.add_argument("--profile", metavar="NAME",
                   help="run what is left on this profile instead (what still runs elsewhere stays watched there)"
                   ).completer = complete_profiles  # type: ignore[attr-defined]
    p.add_argument("--retry-failed", action="store_true", help="also run failed executions again")
    p.add_argument("--leave", choices=LEAVE_POLICIES, default="none", help="as for run")
    p.add_argument("-q", "--quiet", action="store_true")

    sub.add_parser("status", help="executions by state, best objective, what runs now")

    p = sub.add_parser("list", help="one line per execution")
    p.add_argument("--state", action="append", default=[], help="only these states (repeatable)")
    p.add_argument("--json", action="store_true", help="the full records as a JSON array")
    p.add_argument("--sort", default="created", metavar="KEY",
                   help="created (default, oldest first), id, state, objective (best first) or duration")
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the order")
    p.add_argument("-n", "--limit", type=int, metavar="N", help="only the first N (after sorting)")
    p.add_argument("--no-pager", action="store_true",
                   help="never page (by default the text form goes through $GIT_PAGER/$PAGER/less on a terminal)")

    p = sub.add_parser("show", help="an execution's record and the tail of its output")
    p.add_argument("id", help="an execution id or a unique prefix of one"
                   ).completer = complete_execution_ids  # type: ignore[attr-defined]
    p.add_argument("--tail", type=int, default=20, help="lines of stdout/stderr to show")

    p = sub.add_parser("logs", help="an execution's output, wherever it runs; -f follows it until it ends")
    p.add_argument("id", help="an execution id or a unique prefix of one"
                   ).completer = complete_execution_ids  # type: ignore[attr-defined]
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output until the execution ends")
    p.add_argument("--stderr", action="store_true", help="its stderr instead of its stdout")
    p.set_defaults(needs_gevent=True)  # SSH hosts are reached through runaway's gevent-driven connections

    p = sub.add_parser("rm", help="delete execution branches (results are otherwise never rewritten)")
    p.add_argument("ids", nargs="+", metavar="ID").completer = complete_execution_ids  # type: ignore[attr-defined]
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("export", help="one row per execution for pandas and friends, or an RO-Crate")
    p.add_argument("--format", choices=["csv", "jsonl", "ro-crate"], default="csv",
                   help="ro-crate: a Workflow Run RO-Crate (Process Run Crate) directory, outputs included")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write here instead of stdout (ro-crate: the directory, default ./ro-crate)")
    p.add_argument("--state", action="append", default=[])

    _add_collaboration(sub)
    return parser


# Subcommands that live beside their library code: each module offers add_parsers(sub) and
# dispatch(args) -> int, and marks its parsers with set_defaults(extension=MODULE_NAME).
EXTENSIONS = ("collaboration_cli", "report_cli", "analysis_cli")


def _add_collaboration(sub: argparse._SubParsersAction) -> None:
    import importlib

    for name in EXTENSIONS:
        try:
            module = importlib.import_module(f"expegit.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"expegit.{name}":
                raise
            continue
        module.add_parsers(sub)


def _open(args: argparse.Namespace):
    from .campaign import open_campaign

    return open_campaign(args.directory)


def _progress(args: argparse.Namespace):
    from orchestra.progress import Progress

    return Progress(0, sys.stderr, quiet=getattr(args, "quiet", False))


def _report_summary(summary) -> int:
    parts = [f"{summary.finished} finished", f"{summary.failed} failed"]
    if summary.pruned:
        parts.append(f"{summary.pruned} pruned")
    if summary.cancelled:
        parts.append(f"{summary.cancelled} stopped")
    if summary.not_started:
        parts.append(f"{summary.not_started} not started")
    if getattr(summary, "not_created", 0):
        parts.append(f"{summary.not_created} not created")
    print(f"expegit: {summary.total} executions: {', '.join(parts)}", file=sys.stderr)
    for error in summary.errors[:10]:
        print(f"expegit: error: {error}", file=sys.stderr)
    if summary.interrupted:
        print("expegit: interrupted: stopped executions were recorded as cancelled; `expegit resume` runs "
              "them and the ones not started", file=sys.stderr)
        if getattr(summary, "not_created", 0):
            print(f"expegit: {summary.not_created} points were never reached, so not created: the same "
                  f"`expegit run` with --missing creates and runs them", file=sys.stderr)
    return summary.exit_code()


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "init":
        from .campaign import init_campaign

        target = Path(args.directory) / args.dir
        campaign, sha = init_campaign(target, example=args.example)
        what = f"example campaign {args.example!r}" if args.example else "campaign"
        command = campaign.manifest.command if not args.example else None
        print(f"expegit: {what} ready in {campaign.root} (commit {sha[:8]}); next: cd into it and "
              f"`expegit run`")
        if command:
            print(f"expegit: its command: {command}  (edit orchestra.yaml to change it)")
        from .campaign import untracked_files
        from .starter import untracked_note

        note = untracked_note(untracked_files(campaign.root))
        if note:
            print(f"expegit: {note}", file=sys.stderr)
        return 0
    if command == "check":
        campaign = _open(args)
        errors = campaign.check()
        for error in errors:
            print(error, file=sys.stderr)
        if errors:
            return errors[0].exit_code
        m = campaign.manifest
        print(f"{os.path.relpath(campaign.manifest_path)}: ok: campaign {m.name!r}, {len(m.parameters)} "
              f"parameters, default profile {m.profile}")
        return 0
    if command == "run":
        from .runner import run_campaign

        campaign = _open(args)
        campaign.manifest  # validate before anything else
        if args.slots is not None and args.slots < 1:
            raise UsageError(f"--slots {args.slots}: must be at least 1")
        summary = run_campaign(campaign, assignments=args.params, grid=args.grid, repeat=args.repeat,
                               profile=args.profile, slots=args.slots, snapshot=args.snapshot,
                               progress=_progress(args), dry_run=args.dry_run, leave=args.leave,
                               missing=args.missing)
        if args.dry_run:
            print(f"expegit: {summary.total} executions would run", file=sys.stderr)
            return 0
        if args.missing and summary.total == 0:
            print("expegit: nothing to run: every point has an execution at this commit", file=sys.stderr)
            return 0
        return _report_summary(summary)
    if command == "resume":
        from .resume import resume_campaign

        campaign = _open(args)
        summary = resume_campaign(campaign, slots=args.slots, progress=_progress(args),
                                  retry_failed=args.retry_failed, leave=args.leave, profile=args.profile)
        if summary.total == 0:
            print("expegit: nothing to resume", file=sys.stderr)
            return 0
        return _report_summary(summary)
    if command == "status":
        from .listing import status_text

        print(status_text(_open(args)))
        return 0
    if command == "list":
        from .listing import problem_lines, select_entries, write_entries
        from .pager import paged_stdout

        campaign = _open(args)
        if not args.json:
            from .listing import list_texts, write_list_texts

            texts = list_texts(campaign, args.state, sort=args.sort, reverse=args.reverse, limit=args.limit)
            if texts is not None:  # the list file: a tenth of the cache's bytes, nothing parsed
                with paged_stdout(enabled=not args.no_pager) as out:
                    write_list_texts(texts, texts != [], out)
                return 0
        entries, problems = select_entries(campaign, args.state, sort=args.sort, reverse=args.reverse, limit=args.limit)
        with paged_stdout(enabled=not args.no_pager and not args.json) as out:
            write_entries(entries, out, as_json=args.json)
        for line in problem_lines(problems):
            print(f"expegit: {line}", file=sys.stderr)
        return 0
    if command == "show":
        from .listing import show_text

        sys.stdout.write(show_text(_open(args), args.id, tail=args.tail))
        return 0
    if command == "logs":
        from .logs import print_logs

        return print_logs(_open(args), args.id, stderr=args.stderr, follow=args.follow)
    if command == "rm":
        from .listing import remove
        from .records import RecordIndex

        campaign = _open(args)
        ids = [RecordIndex(campaign.store).resolve(p) for p in args.ids]
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError("rm deletes results: confirm with --yes when not on a terminal")
            answer = input(f"delete {len(ids)} execution branch(es) {', '.join(ids[:5])}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("expegit: nothing deleted", file=sys.stderr)
                return 0
        removed = remove(campaign, ids)
        print(f"expegit: deleted {len(removed)} execution branch(es)", file=sys.stderr)
        return 0
    if command == "export":
        from .listing import campaign_metrics, select, write_export

        campaign = _open(args)
        records = select(campaign, args.state)
        if args.format == "ro-crate":
            from .provenance import write_crate

            written = write_crate(campaign, records, Path(args.output or "ro-crate"))
            print(f"expegit: RO-Crate of {len(records)} executions: {written}", file=sys.stderr)
            return 0
        metrics = campaign_metrics(campaign, records)
        if args.output:
            with open(args.output, "w", newline="", encoding="utf-8") as out:
                write_export(records, out, args.format, metrics=metrics)
        else:
            write_export(records, sys.stdout, args.format, metrics=metrics)
        return 0
    import importlib

    extension = getattr(args, "extension", None)
    if extension not in EXTENSIONS:
        raise UsageError(f"unknown command {command!r}")
    return importlib.import_module(f"expegit.{extension}").dispatch(args)


# Commands that drive executions concurrently. Read-only commands skip gevent's monkey-patching: it costs
# half a second at start-up (it scans every installed distribution's entry points), and `expegit status`
# on 10,000 executions must answer in under 0.5 s.
CONCURRENT_COMMANDS = frozenset({"run", "resume"})


def _dispatch_patched(args: argparse.Namespace) -> int:
    if args.command in CONCURRENT_COMMANDS or getattr(args, "needs_gevent", False):
        patch_gevent()
    return _dispatch(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("expegit", _parser(), argv, _dispatch_patched)


if __name__ == "__main__":
    sys.exit(main())
