"""Client-side ``pre-push``: only well-formed executions whose code is (or will be) on the remote leave.

Refused, for each execution branch being pushed: a tip whose ``.orchestra/execution.yaml`` is missing or
malformed, and a record whose code commit is neither reachable from a non-execution ref in this push nor
already on the remote (reachable from one of its branches or tags). The commit object would travel with
the branch (it is the first commit's parent), but no branch of the remote would name it: collaborators
would see results of code they cannot check out by name. Fix: push the code branch too
(`expegit push` does), or push it first.

Standard library only (see common.py); `git push --no-verify` skips it, as for any pre-push hook.
"""
from __future__ import annotations

import subprocess
import sys

try:
    from . import common
except ImportError:  # run as a file
    import common  # type: ignore[no-redef,import-not-found]


def existing(shas: set[str]) -> set[str]:
    """The subset of ``shas`` that are objects in this repository."""
    if not shas:
        return set()
    ordered = sorted(shas)
    out = subprocess.run(["git", "cat-file", "--batch-check"], input="\n".join(ordered) + "\n",
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return {sha for sha, line in zip(ordered, out) if not line.endswith("missing")}


def reachable(commit: str, sources: set[str]) -> bool:
    """Is ``commit`` an ancestor of (or one of) ``sources``? One `git rev-list` per code commit."""
    if commit in sources:
        return True
    if not sources:
        return False
    result = subprocess.run(["git", "rev-list", "-n", "1", commit, "--stdin"],
                            input="".join(f"^{sha}\n" for sha in sorted(sources)), capture_output=True, text=True)
    return result.returncode == 0 and not result.stdout.strip()


def tracking_tips(remote: str) -> set[str]:
    """Tips of the remote's branches (not executions) and tags as this repository last saw them."""
    out = common.git("for-each-ref", "--format=%(objectname) %(refname)", f"refs/remotes/{remote}/",
                     "refs/tags/", check=False)
    tips = set()
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        if ref.startswith(f"refs/remotes/{remote}/executions/") or ref.endswith("/HEAD"):
            continue
        tips.add(sha)
    return tips


def remote_tips(url: str) -> set[str]:
    """Tips of the remote's branches (not executions) and tags, asked of the remote itself."""
    out = common.git("ls-remote", "--heads", "--tags", url, check=False)
    tips = set()
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if not ref.startswith(common.EXECUTION_PREFIX) and not ref.endswith("^{}"):
            tips.add(sha)
    return tips


def check(pushed: list[common.PushedRef], remote: str, url: str) -> list[str]:
    executions = [p for p in pushed if p.is_execution and not p.is_deletion]
    if not executions:
        return []
    tips = {p.remote_ref: p.local_sha for p in executions}
    problems, commits = common.check_records(tips)
    messages = [f"{ref}: malformed execution record at {tips[ref][:12]}: {problems[ref]} (fix it with a new "
                f"commit on the branch, or leave the branch out of the push)" for ref in sorted(problems)]
    sources = {p.local_sha for p in pushed if not p.is_execution and not p.is_deletion}
    sources |= existing(tracking_tips(remote))
    needed: dict[str, list[str]] = {}
    for ref, commit in commits.items():
        needed.setdefault(commit, []).append(ref)
    missing = [c for c in needed if not reachable(c, sources)]
    if missing:  # the tracking refs may be stale: ask the remote before refusing
        sources |= existing(remote_tips(url or remote))
        missing = [c for c in missing if not reachable(c, sources)]
    for commit in sorted(missing):
        refs = sorted(needed[commit])
        shown = ", ".join(refs[:3]) + (f" and {len(refs) - 3} more" if len(refs) > 3 else "")
        messages.append(f"{shown}: code commit {commit[:12]} is neither in this push nor on {remote}: push "
                        f"the branch holding it as well (e.g. `git push {remote} main`, or `expegit push`)")
    return messages


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    remote = argv[0] if argv else "origin"
    url = argv[1] if len(argv) > 1 else remote
    try:
        pushed = common.parse_pushed_refs(sys.stdin)
    except ValueError as exc:
        common.say(f"orchestra pre-push: {exc}")
        return 1
    messages = check(pushed, remote, url)
    for message in messages[:50]:
        common.say(f"orchestra: refusing to push {message}")
    if len(messages) > 50:
        common.say(f"orchestra: ... and {len(messages) - 50} more")
    if messages:
        common.say("orchestra: nothing was pushed (`git push --no-verify` bypasses this check)")
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(common.guarded("pre-push", main, 1))
