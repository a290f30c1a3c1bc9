"""`expegit report` end to end on a real campaign: git reading included, as a user (or the post-receive hook) runs it.

Why beside report_render.py (the renderer alone): at 100,000 executions reading the branches, not rendering,
was what took longest. Give a campaign to copy (it is never written) or a size to generate with
bench/large_campaign.py's generator. The record cache is built first by `expegit list --json` (timed
apart: that is the first command after a clone), then the report is rendered into a fresh directory
and once more over the previous one (what the hook does on every push).

    python bench/report_campaign.py --campaign /work/bench-data/large100k
    python bench/report_campaign.py -n 10000 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from _common import GIT_ENV, expegit, machine, make_campaign, now, timed, write_section
from large_campaign import MANIFEST, generate
from report_browser import site_size

SECTION = "Report of a real campaign (bench/report_campaign.py)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", type=Path, help="a campaign to copy (read-only source)")
    ap.add_argument("-n", type=int, default=10_000, help="executions to generate when no --campaign")
    ap.add_argument("--rounds", type=int, default=1,
                    help="fresh and replacing renders each this many times (the issue asks best and median of 5)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    header = machine()
    with tempfile.TemporaryDirectory(prefix="orchestra-report-campaign-") as tmp:
        root = Path(tmp) / "c"
        if args.campaign:
            shutil.copytree(args.campaign, root, symlinks=True)
        else:
            root = make_campaign(root, MANIFEST, {"t.py": "print('hi')\n"})
            generate(root, args.n)
        os.environ.update(GIT_ENV)
        cache, _ = timed(expegit("list", "--json"), root)
        fresh_s: list[float] = []
        again_s: list[float] = []
        for round_ in range(args.rounds):
            # A new directory each round: "fresh" must not find the previous round's site to reuse.
            site = Path(tmp) / f"site{round_}"
            fresh, result = timed(expegit("report", "-o", str(site)), root)
            assert result.returncode == 0, result.stderr
            again, again_result = timed(expegit("report", "-o", str(site)), root)
            assert again_result.returncode == 0, again_result.stderr
            fresh_s.append(fresh)
            again_s.append(again)
            print(f"round {round_ + 1}: fresh {fresh:.1f} s, replacing {again:.1f} s", flush=True)
            files, size = site_size(site)
            if round_ < args.rounds - 1:
                shutil.rmtree(site)
        count = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    body = "\n".join([
        f"{now()} · {header}", "",
        f"`expegit report` of {args.campaign or f'a generated campaign of {args.n}'} ({count}).", "",
        f"| step | best s | median s (of {args.rounds}) |", "|---|---|---|",
        f"| `expegit list --json` first (builds the record cache) | {cache:.1f} | |",
        f"| `expegit report -o SITE` (fresh) | {min(fresh_s):.1f} | {statistics.median(fresh_s):.1f} |",
        f"| `expegit report -o SITE` again (replaces the previous site, reuses unchanged outputs) "
        f"| {min(again_s):.1f} | {statistics.median(again_s):.1f} |",
        "", f"Site: {files} files, {size / 1e6:.1f} MB. Goal at 100,000 executions: under 60 s."])
    print(body)
    if args.write:
        write_section(args.write, SECTION, body)


if __name__ == "__main__":
    main()
