"""The text `expegit list` from the record cache's list file: the same output as from the cache, and never
a stale or a foreign one."""
from __future__ import annotations

import io
import json
from pathlib import Path

from expegit.campaign import open_campaign
from expegit.journal import Journal
from expegit.listing import list_texts, select_entries, write_entries, write_list_texts
from expegit.records import LIST_NAME, RecordIndex
from expegit.runner import create_executions
from orchestra.execution import ExecutionSpec
from tests.helpers import make_campaign

MANIFEST = 'name: lf\ncommand: python3 t.py {x} {label}\nparameters:\n  x: {type: int, low: 0, high: 99}\n' \
           '  label: {choices: [a, "b\\tc"]}\n'


def _slow(campaign, **kwargs) -> str:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    write_entries(select_entries(campaign, **kwargs)[0], out, as_json=False)
    return out.getvalue()


def _fast(campaign, **kwargs) -> str | None:  # type: ignore[no-untyped-def]
    texts = list_texts(campaign, **kwargs)
    if texts is None:
        return None
    out = io.StringIO()
    write_list_texts(texts, texts != [], out)
    return out.getvalue()


def test_the_list_file_prints_what_the_cache_prints_and_follows_the_refs(tmp_path: Path) -> None:
    make_campaign(tmp_path / "c", MANIFEST, {"t.py": "print('hi')\n"})
    campaign = open_campaign(tmp_path / "c")
    head = campaign.store.head_commit()
    specs = [ExecutionSpec(commit=head, parameters={"x": i, "label": "a" if i % 2 else "b\tc"}, profile="local")
             for i in range(6)]
    journal = Journal(campaign.store)
    created = list(create_executions(campaign, campaign.manifest, specs))
    assert _fast(campaign) is None  # no list file yet
    expected = _slow(campaign)
    assert _fast(campaign) == expected and "label=b\tc" in expected  # an escaped tab comes back as typed
    assert _fast(campaign, limit=2) == _slow(campaign, limit=2)
    for kwargs in ({"sort": "objective"}, {"sort": "duration", "reverse": True}, {"sort": "id"},
                   {"sort": "state", "limit": 3}, {"sort": "created", "reverse": True}, {"states": ["finished"]}):
        assert _fast(campaign, **kwargs) == _slow(campaign, **kwargs), kwargs
    for k, (record, tip) in enumerate(created[:3]):
        record.state, record.objective, record.duration = "finished", [0.5, -1.0, 0.5][k], 3.0 - k
        journal.append(tip, record, {"metrics.json": json.dumps({"loss": record.objective}).encode()})
    assert _fast(campaign) is None  # a branch moved: the file is not used
    assert "finished" in _slow(campaign) and _fast(campaign) == _slow(campaign)
    for kwargs in ({"sort": "objective"}, {"sort": "objective", "reverse": True, "limit": 2},
                   {"states": ["finished"]}, {"states": ["created"], "sort": "id", "reverse": True}):
        assert _fast(campaign, **kwargs) == _slow(campaign, **kwargs), kwargs
    listing = campaign.store.git_dir / "orchestra" / LIST_NAME
    for bad in (listing.read_text()[:-10], "orchestra-list\t9\n", ""):
        listing.write_text(bad)
        assert _fast(campaign) is None  # truncated, another version's, empty: the cache answers
    assert RecordIndex(campaign.store).lines() and _fast(campaign) == _slow(campaign)  # ... and mends it
