"""Server-side ``pre-receive``: execution branches are append-only and hold well-formed records.

Refused, for refs/heads/executions/<id>: deletions, non-fast-forward updates (a rewrite of results other
people may already have pulled), and any new tip whose ``.orchestra/execution.yaml`` is missing or
malformed. The whole push is refused if one ref is (git applies all or nothing when pre-receive fails),
with one line per refused ref saying why and how to fix it.

Override, for an administrator who really means to rewrite or delete results, in any of three ways:
``git push -o orchestra-allow-rewrite`` (the server must set ``receive.advertisePushOptions true``, which
``expegit hooks install --server`` does), ``git config orchestra.allowRewrite true`` in the bare
repository, or ``ORCHESTRA_ALLOW_REWRITE=1`` in the environment of the receiving git (local pushes).
Records are still checked under the override. Standard library only (see common.py).
"""
from __future__ import annotations

import os
import sys

try:
    from . import common
except ImportError:  # run as a file
    import common  # type: ignore[no-redef]


def rewrite_allowed(environ=os.environ) -> bool:
    return (common.OVERRIDE_OPTION in common.push_options(environ)
            or common.config_true(environ.get(common.OVERRIDE_ENV))
            or common.config_true(common.git_config(common.OVERRIDE_CONFIG)))


def non_fast_forwards(updates: list[common.RefUpdate]) -> set[str]:
    """Refs whose update does not descend from the old tip (one `git merge-base` per update)."""
    refused = set()
    for update in updates:
        if update.is_creation or update.is_deletion:
            continue
        result = common.subprocess.run(["git", "merge-base", "--is-ancestor", update.old, update.new],
                                       capture_output=True)
        if result.returncode != 0:
            refused.add(update.ref)
    return refused


def check(updates: list[common.RefUpdate], allow_rewrite: bool) -> list[str]:
    """One message per refused ref (empty: accept the push)."""
    executions = [u for u in updates if u.is_execution]
    messages = []
    if not allow_rewrite:
        for update in executions:
            if update.is_deletion:
                messages.append(f"{update.ref}: deleting an execution branch is refused (results are "
                                f"append-only; an administrator may push with -o {common.OVERRIDE_OPTION})")
        for ref in sorted(non_fast_forwards(executions)):
            messages.append(f"{ref}: non-fast-forward update refused (results are append-only): pull "
                            f"first (`expegit pull`) and push again; an administrator may push with "
                            f"-o {common.OVERRIDE_OPTION}")
    tips = {u.ref: u.new for u in executions if not u.is_deletion}
    problems, _commits = common.check_records(tips)
    for ref in sorted(problems):
        messages.append(f"{ref}: malformed execution record at {tips[ref][:12]}: {problems[ref]} (fix the "
                        f"record with a new commit on the branch, or do not push it)")
    return messages


def main(argv: list[str] | None = None) -> int:
    try:
        updates = common.parse_ref_updates(sys.stdin)
    except ValueError as exc:
        common.say(f"orchestra pre-receive: {exc}")
        return 1
    messages = check(updates, rewrite_allowed())
    for message in messages[:50]:
        common.say(f"orchestra: refused {message}")
    if len(messages) > 50:
        common.say(f"orchestra: ... and {len(messages) - 50} more refused refs")
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
