"""Server-side ``pre-receive``: execution branches are append-only and hold well-formed records.

Refused, for refs/heads/executions/<id>: deletions, non-fast-forward updates (a rewrite of results other
people may already have pulled), and any new tip whose ``.orchestra/execution.yaml`` is missing or
malformed. The whole push is refused if one ref is (git applies all or nothing when pre-receive fails),
with one line per refused ref saying why and how to fix it.

Deleting or rewriting results is an administrator's decision, made on the server (rewrite_policy.py):
the pushing user must be listed in ``orchestra.rewriteUsers`` of the bare repository's config, and push
with ``-o orchestra-allow-rewrite``. Nothing a pusher sets on their side (an environment variable, their
own git config, a push option alone) grants it. Allowed deletions and rewrites are logged in
BARE/orchestra/rewrites.log; records are still checked. Standard library only (see common.py).
"""
from __future__ import annotations

import sys
import time

try:
    from . import common, index_check, rewrite_policy
except ImportError:  # run as a file
    import common  # type: ignore[no-redef,import-not-found]
    import index_check  # type: ignore[no-redef,import-not-found]
    import rewrite_policy  # type: ignore[no-redef,import-not-found]


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


def check(updates: list[common.RefUpdate], policy: rewrite_policy.Policy) -> tuple[list[str], list[common.RefUpdate]]:
    """(one message per refused ref, the deletions and rewrites the policy lets through); no message: accept."""
    executions = [u for u in updates if u.is_execution]
    messages = []
    deletions = [u for u in executions if u.is_deletion]
    forced = non_fast_forwards(executions)
    rewrites = [u for u in executions if u.ref in forced]
    if not policy.allows_rewrite and (deletions or rewrites):
        hint = rewrite_policy.refusal_hint(policy)
        for update in deletions:
            messages.append(f"{update.ref}: deleting an execution branch is refused (results are append-only): {hint}")
        for update in sorted(rewrites, key=lambda u: u.ref):
            messages.append(f"{update.ref}: non-fast-forward update refused (results are append-only): pull "
                            f"first (`expegit pull`) and push again; to replace results, {hint}")
    elif deletions or rewrites:
        # git itself would refuse these after this hook (`git init --shared` sets denyNonFastForwards):
        # say so now, and log nothing that will not happen.
        for update, key, what in [*((u, "receive.denyDeletes", "deletions") for u in deletions),
                                  *((u, "receive.denyNonFastForwards", "non-fast-forward updates") for u in rewrites)]:
            if common.config_true(common.git_config(key)):
                messages.append(f"{update.ref}: this repository's git refuses {what} as well ({key} is true, "
                                f"as `git init --shared` sets it); an administrator can unset it with "
                                f"`git config --unset {key}` in the bare repository")
    tips = {u.ref: u.new for u in executions if not u.is_deletion}
    records: dict[str, object] = {}
    problems, _commits = common.check_records(tips, records)
    for ref in sorted(problems):
        messages.append(f"{ref}: malformed execution record at {tips[ref][:12]}: {problems[ref]} (fix the "
                        f"record with a new commit on the branch, or do not push it)")
    messages.extend(index_check.check(updates, records))  # the shipped record index may only repeat the records
    allowed = [] if messages or not policy.allows_rewrite else deletions + rewrites
    return messages, allowed


def main(argv: list[str] | None = None) -> int:
    directory = common.git_dir()
    common.apply_shared_umask(directory)
    try:
        updates = common.parse_ref_updates(sys.stdin)
    except ValueError as exc:
        common.say(f"orchestra pre-receive: {exc}")
        return 1
    policy = rewrite_policy.decide(directory)
    messages, allowed = check(updates, policy)
    for message in messages[:50]:
        common.say(f"orchestra: refused {message}")
    if len(messages) > 50:
        common.say(f"orchestra: ... and {len(messages) - 50} more refused refs")
    if messages and policy.legacy_switch and policy.user_allowed:
        common.say(f"orchestra: note: {common.LEGACY_OVERRIDE_CONFIG} in this remote's config no longer allows "
                   f"anything; {common.REWRITE_USERS_CONFIG} and -o {common.OVERRIDE_OPTION} do")
    if messages:
        return 1
    if allowed:
        now = time.time()
        try:
            log = rewrite_policy.append_log(directory, [rewrite_policy.entry_for(u, policy.user, now) for u in allowed])
        except OSError as exc:
            common.say(f"orchestra: refused: cannot record the rewrite in {rewrite_policy.log_path(directory)} "
                       f"({exc}); nothing was changed (the administrator must make that file writable)")
            return 1
        for update in allowed:
            action = "deletion" if update.is_deletion else "rewrite"
            common.say(f"orchestra: {action} of {update.ref} by {policy.user} allowed and logged in {log}")
    return 0


if __name__ == "__main__":
    sys.exit(common.guarded("pre-receive", main, 1))
