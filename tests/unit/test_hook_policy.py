"""The hooks' pure parts: who may rewrite, what the refusal says, the rewrite log and the render status."""
from __future__ import annotations

import pytest

from orchestra_hooks import common, post_receive, rewrite_policy
from orchestra_hooks.rewrite_policy import LogEntry, Policy


def test_user_list_takes_spaces_commas_and_several_values() -> None:
    assert rewrite_policy.parse_user_list(["alice bob", "carol,dave , ", ""]) == {"alice", "bob", "carol", "dave"}
    assert rewrite_policy.parse_user_list([]) == frozenset()


def test_pushing_user_trusts_a_variable_only_when_named() -> None:
    env = {"GL_USER": "alice", "USER": "mallory"}
    assert rewrite_policy.pushing_user(env, None, "git") == "git"  # never $USER
    assert rewrite_policy.pushing_user(env, "GL_USER", "git") == "alice"
    assert rewrite_policy.pushing_user({"GL_USER": "  "}, "GL_USER", "git") == "git"
    assert rewrite_policy.pushing_user(env, "not a name; rm", "git") == "git"


def test_both_halves_are_needed() -> None:
    assert Policy("a", user_allowed=True, option_given=True).allows_rewrite
    assert not Policy("a", user_allowed=True, option_given=False).allows_rewrite
    assert not Policy("a", user_allowed=False, option_given=True).allows_rewrite


def test_refusal_advertises_the_option_only_to_those_who_can_use_it() -> None:
    stranger = rewrite_policy.refusal_hint(Policy("bob", user_allowed=False, option_given=False))
    assert common.OVERRIDE_OPTION not in stranger and "administrator" in stranger
    tried = rewrite_policy.refusal_hint(Policy("bob", user_allowed=False, option_given=True))
    assert "not enough" in tried and "bob may not rewrite" in tried and "administrator" in tried
    admin = rewrite_policy.refusal_hint(Policy("alice", user_allowed=True, option_given=False))
    assert f"-o {common.OVERRIDE_OPTION}" in admin and "alice" in admin


def test_log_entry_round_trip_and_refusals() -> None:
    update = common.RefUpdate("a" * 40, common.ZERO, "refs/heads/executions/0123456789ab")
    entry = rewrite_policy.entry_for(update, 'we"ird\nuser', 0.0)
    assert entry == LogEntry("1970-01-01T00:00:00Z", 'we"ird\nuser', "delete", update.ref, "a" * 40, common.ZERO)
    line = rewrite_policy.render_log_entry(entry)
    assert line.endswith("\n") and line.count("\n") == 1
    assert rewrite_policy.parse_log_entry(line) == entry
    rewrite = rewrite_policy.entry_for(common.RefUpdate("a" * 40, "b" * 40, update.ref), "u", 0.0)
    assert rewrite.action == "rewrite"
    for bad in ("", "[]", "{}", '{"time": 1}', line.replace('"delete"', '"erase"'), line.replace('"user"', '"who"')):
        with pytest.raises(ValueError):
            rewrite_policy.parse_log_entry(bad)


def test_render_status_round_trip() -> None:
    failed = post_receive.RenderStatus(False, "2026-12-01 10:00:00", "OSError: [Errno 20]\nNot a directory")
    text = post_receive.render_status(failed)
    assert text == "failed 2026-12-01 10:00:00 OSError: [Errno 20] Not a directory\n"
    assert post_receive.parse_status(text) == post_receive.RenderStatus(False, failed.time,
                                                                        "OSError: [Errno 20] Not a directory")
    ok = post_receive.RenderStatus(True, "2026-12-01 10:00:01", "/srv/site/index.html")
    assert post_receive.parse_status(post_receive.render_status(ok)) == ok
    for bad in ("", "done 2026-12-01 10:00:00 x", "ok"):
        with pytest.raises(ValueError):
            post_receive.parse_status(bad)


@pytest.mark.parametrize(("value", "current", "expected"), [
    (None, 0o022, 0o022), ("false", 0o022, 0o022), ("umask", 0o077, 0o077),
    ("group", 0o022, 0o002), ("true", 0o077, 0o007), ("1", 0o022, 0o002),
    ("all", 0o077, 0o002), ("world", 0o022, 0o002), ("2", 0o022, 0o002),
    ("0660", 0o022, 0o007), ("0640", 0o022, 0o027), ("nonsense", 0o022, 0o022),
])
def test_shared_umask_follows_core_shared_repository(value: str | None, current: int, expected: int) -> None:
    assert common.shared_umask(value, current) == expected


def test_a_hook_that_fails_says_so_in_one_line(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRA_HOOK_DEBUG", raising=False)

    def broken() -> int:
        raise KeyError("GIT_DIR")

    assert common.guarded("pre-receive", broken, 1) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pre-receive hook failed: KeyError" in err and "the push is refused" in err
    assert common.guarded("post-receive", broken, 0) == 0
    assert "the push went through" in capsys.readouterr().err
    assert common.guarded("pre-push", lambda: 0, 1) == 0
    monkeypatch.setenv("ORCHESTRA_HOOK_DEBUG", "1")
    with pytest.raises(KeyError):
        common.guarded("pre-receive", broken, 1)
