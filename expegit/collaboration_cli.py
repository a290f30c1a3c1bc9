"""`expegit clone | push | pull | hooks install`: thin wrappers over expegit.collaboration."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "collaboration_cli"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clone", help="clone a campaign with all its execution branches")
    p.add_argument("url", help="anything git clones: a path, ssh://host/path, host:path, https://...")
    p.add_argument("dir", nargs="?", help="target directory (default: the URL's last part)")
    p.set_defaults(extension=NAME)

    p = sub.add_parser("push", help="push the code branch and every new or grown execution branch")
    p.add_argument("remote", nargs="?", default="origin")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="push in groups of about N execution branches, one `git push` each, so a dropped "
                        "connection loses one group (default: one push)")
    p.set_defaults(extension=NAME)

    p = sub.add_parser("pull", help="fetch collaborators' executions (fast-forward only) and the code branch")
    p.add_argument("remote", nargs="?", default="origin")
    p.set_defaults(extension=NAME)

    p = sub.add_parser("hooks", help="install Orchestra's git hooks")
    hooks = p.add_subparsers(dest="hooks_command", required=True, metavar="ACTION")
    h = hooks.add_parser("install", help="pre-push into this campaign, or --server hooks into a bare repository")
    h.add_argument("--server", metavar="BARE_REPO", help="install pre-receive and post-receive into this bare repository")
    h.add_argument("--report-dir", metavar="DIR", help="with --server: regenerate the HTML report here after pushes")
    h.add_argument("--python", metavar="PATH", help="interpreter the hooks run with (default: this one)")
    h.add_argument("--force", action="store_true", help="replace existing hooks that are not Orchestra's")
    h.set_defaults(extension=NAME)
    p.set_defaults(extension=NAME)


def dispatch(args: argparse.Namespace) -> int:
    from orchestra.errors import UsageError

    from . import collaboration as collab
    from .gitstore import GitStore

    base = Path(args.directory)
    if args.command == "clone":
        target = base / (args.dir or collab.default_clone_directory(args.url))
        result = collab.clone(args.url, target)
        note = "" if result.is_campaign else " (no orchestra.yaml: not a campaign yet; `expegit init` adopts it)"
        print(f"expegit: cloned into {result.root} with {result.executions} executions{note}")
        return 0
    if args.command == "push":
        store = GitStore.discover(base)
        result = collab.push(store, args.remote, batch_size=args.batch_size, progress=collab.print_progress())
        print(f"expegit: {result.code}; {result.pushed} execution branches pushed to {args.remote} "
              f"({result.up_to_date} already there, {result.total} in all); {result.index}")
        return 0
    if args.command == "pull":
        store = GitStore.discover(base)
        result = collab.pull(store, args.remote)
        ahead = f", {len(result.ahead)} ahead of {args.remote} (push them)" if result.ahead else ""
        print(f"expegit: {result.new} new and {result.updated} updated executions from {args.remote}{ahead}; "
              f"{result.code}")
        return 0
    if args.command == "hooks":
        if args.server:
            paths = collab.install_server_hooks(base / args.server,
                                                report_dir=Path(args.report_dir) if args.report_dir else None,
                                                force=args.force, interpreter=args.python)
        else:
            if args.report_dir:
                raise UsageError("--report-dir goes with --server BARE_REPO")
            paths = collab.install_client_hooks(GitStore.discover(base), force=args.force, interpreter=args.python)
        for path in paths:
            print(f"expegit: installed {path}")
        if args.server:
            for line in collab.rewrite_policy_notes(base / args.server):
                print(f"expegit: {line}")
        return 0
    raise UsageError(f"unknown command {args.command!r}")


__all__ = ["add_parsers", "dispatch"]
