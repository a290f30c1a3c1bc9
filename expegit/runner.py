"""Running a campaign: executions created as branches, placed on a backend's slots, committed as they end.

This module is where expegit meets runaway: it turns ExecutionSpecs into branches (journal "created"
commits), hands runaway Jobs, and has runaway's outcomes journaled (expegit/journal_listener.py). What an
earlier controller left unfinished is found by expegit/resume.py.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import gevent

from orchestra.controllers import controller_alive
from orchestra.errors import ManifestError, OrchestraError, RepositoryError, ResourceError, UsageError
from orchestra.execution import (ExecutionRecord, ExecutionSpec,
                                 new_execution_id)
from orchestra.manifest import Manifest
from orchestra.parameters import expand_points, parse_assignments
from orchestra.progress import Progress
from orchestra.quoting import render_command
from orchestra.resources import Request, placeholder
from orchestra.resources import resolve as resolve_resources
from runaway.backend import Backend, Job
from runaway.factory import campaign_backend as make_backend
from runaway.controller import Controller, Task
from runaway.environment_capture import EnvironmentCapture, render_record_env

from .campaign import Campaign
from .journal import Journal, JournalWriter, utc_now
from .records import RecordIndex
from .journal_listener import JournalListener
from .run_summary import RunSummary


def code_commit(campaign: Campaign, *, snapshot: bool) -> str:
    """The commit executions will run: HEAD if the tree is clean, else a snapshot or a refusal."""
    head = campaign.store.head_commit()
    if head is None:
        raise RepositoryError("the campaign has no commit yet", hint="commit your code first")
    dirty = campaign.store.dirty_paths()
    if not dirty:
        _refuse_uncommitted_command_files(campaign, head)
        return head
    if not snapshot:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise RepositoryError(f"uncommitted changes to tracked files ({shown}): results would not name the "
                              f"code they ran", hint="commit them, stash them, or pass --snapshot to run a "
                                                     "snapshot commit of the working tree")
    commit = campaign.store.snapshot(f"expegit snapshot of the working tree\n\nChanged: {', '.join(dirty)}\n")
    _refuse_uncommitted_command_files(campaign, commit)
    return commit


def command_files(command: str | Sequence[str]) -> list[str]:
    """Words of the command that name files of the campaign (a script, a config): pure.

    Placeholders are left out (their values are not files of the code), and so are options and words
    that name programs on PATH.
    """
    import re
    import shlex

    if isinstance(command, str):
        try:
            words = shlex.split(re.sub(r"\{[^{}]*\}", "", command), comments=True)
        except ValueError:
            return []
    else:
        words = [w for w in command if "{" not in w]
    return [w for w in words if not w.startswith("-") and "=" not in w and not w.startswith("/")
            and (("/" in w and not w.startswith("$")) or re.search(r"\.(py|sh|R|jl|lua|pl|rb|js|m|ipynb|yaml|json)$", w))]


def _refuse_uncommitted_command_files(campaign: Campaign, commit: str) -> None:
    """Refuse before anything is created when the command names a file that exists here but not in the
    commit: every execution would fail with "can't open file" (an `expegit init` beside an untracked
    train.py did exactly that)."""
    missing = [w for w in command_files(campaign.manifest.command)
               if (campaign.root / w).is_file() and campaign.store.read_path(commit, w) is None]
    if missing:
        raise RepositoryError(f"the command names {', '.join(missing)}, which is not committed: executions run "
                              f"the committed code and would not find it",
                              hint=f"git add {' '.join(missing)} && git commit")


def plan_specs(manifest: Manifest, commit: str, profile: str, *, assignments: Sequence[str], grid: bool,
               repeat: int | None) -> list[ExecutionSpec]:
    return list(iter_specs(manifest, commit, profile, assignments=assignments, grid=grid, repeat=repeat))


def iter_specs(manifest: Manifest, commit: str, profile: str, *, assignments: Sequence[str], grid: bool,
               repeat: int | None) -> Iterator[ExecutionSpec]:
    """The specs of a run, lazily: a grid of 1,000,000 points is never held in memory at once."""
    given = parse_assignments(assignments, manifest.parameters)
    repeats = repeat if repeat is not None else manifest.repeats
    if repeats < 1:
        raise UsageError(f"--repeat {repeats}: must be at least 1")
    for point in expand_points(manifest.parameters, given, grid=grid):
        for index in range(repeats):
            yield ExecutionSpec(commit=commit, parameters=point, profile=profile, repeat=index)


def point_key(parameters: Mapping[str, Any], repeat: int) -> str:
    """A parameter point and repeat index, compared canonically (1 == 1.0, True is not 1)."""
    from orchestra.parameters import canonical_value

    return json.dumps([sorted((k, repr(canonical_value(v))) for k, v in parameters.items()), repeat])


def without_present(specs: Iterable[ExecutionSpec], records: Iterable[ExecutionRecord]) -> list[ExecutionSpec]:
    """`run --missing`: the specs with no execution at the same commit that finished or may still finish.

    Pure. Failed and cancelled executions do not count (the point is missing a result); created and
    running ones do, so that a second `run --missing` beside a live one does not run them twice.
    """
    return list(skip_present(specs, present_points(records)))


def present_points(records: Iterable[ExecutionRecord]) -> set[tuple[str, str]]:
    """(commit, point key) of every execution that finished or may still finish (see without_present)."""
    return {(r.commit, point_key(r.parameters, r.repeat)) for r in records
            if r.state in ("created", "running", "finished")}


def skip_present(specs: Iterable[ExecutionSpec], present: set[tuple[str, str]]) -> Iterator[ExecutionSpec]:
    return (s for s in specs if (s.commit, point_key(s.parameters, s.repeat)) not in present)


def job_for(manifest: Manifest, record: ExecutionRecord) -> Job:
    outputs = tuple(manifest.outputs)
    if manifest.objective is not None and manifest.objective.source and manifest.objective.source not in outputs:
        outputs += (manifest.objective.source,)
    env = dict(manifest.env)
    env["ORCHESTRA_EXECUTION_ID"] = record.id
    env["ORCHESTRA_CAMPAIGN"] = manifest.name
    env["ORCHESTRA_PARAMETERS"] = json.dumps(record.parameters, ensure_ascii=False)
    # record_env's values are read by shell builtins in front of the command: after binding, per execution.
    command = render_record_env(manifest.record_env) + record.command
    return Job(execution_id=record.id, commit=record.commit, command=command, outputs=outputs,
               timeout=manifest.timeout, env=env, resources=request_for(manifest, record.parameters),
               checkpoint=manifest.checkpoint)


def request_for(manifest: Manifest, parameters: Mapping[str, Any]) -> Request | None:
    """What one execution needs (its placeholders resolved), or None when the manifest declares nothing."""
    if manifest.resources is None:
        return None
    try:
        return resolve_resources(manifest.resources, parameters)
    except ValueError as exc:
        raise ManifestError(str(exc), path=manifest.path, hint="fix the parameter's value or the resources: entry") \
            from None


def check_requests(manifest: Manifest, backend: Backend, points: Iterable[Mapping[str, Any]]) -> None:
    """Refuse requests no node can ever run before anything is created (backend.check_requests).

    The error names the parameter values that ask for too much (``n_gpus=4``): with a placeholder such as
    ``gpus: "{n_gpus}"`` the request alone does not tell the user which part of the grid or space to fix."""
    if manifest.resources is None:
        return
    asked: dict[Request, list[Mapping[str, Any]]] = {}
    for point in points:
        request = request_for(manifest, point)
        if request is not None:
            asked.setdefault(request, []).append(point)
    try:
        backend.check_requests(list(asked))
    except ResourceError as exc:
        names = [name for value in manifest.resources.values() if (name := placeholder(value)) is not None]
        if not names:
            raise
        # Only on the way out: each distinct request again (a few), to say which values cannot fit.
        too_big = []
        for request, where in list(asked.items())[:MAX_NAMED_REQUESTS]:
            try:
                backend.check_requests([request])
            except ResourceError:
                too_big.extend(where)
        values = sorted({" ".join(f"{n}={point.get(n)!r}" if isinstance(point.get(n), str) else f"{n}={point.get(n)}"
                                  for n in dict.fromkeys(names)) for point in too_big})
        if not values:
            raise
        shown = ", ".join(values[:8]) + (f" and {len(values) - 8} more" if len(values) > 8 else "")
        raise ResourceError(f"{exc.message}; asked for by {shown}", hint=exc.hint) from None


MAX_NAMED_REQUESTS = 64  # distinct requests checked one by one to name the values of the failing ones


class ControllerRegistry:
    """Which controllers are driving this campaign now, so `resume` does not steal live executions.

    A command registers BEFORE it looks for other controllers and before it creates or adopts anything:
    of two controllers starting at once, the later one to look then always sees the other. (Registering
    only when the executions started let a `parasearch run` adopt the executions another one had just
    created, and both wrote their branches.) Entering again in the same process nests.
    """

    _depth: dict[Path, int] = {}

    def __init__(self, campaign: Campaign) -> None:
        self.dir = campaign.workdir / "controllers"
        self.path = self.dir / str(os.getpid())

    def __enter__(self) -> "ControllerRegistry":
        depth = self._depth.get(self.path, 0)
        if depth == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.path.write_text(str(time.time()))
        self._depth[self.path] = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        depth = self._depth.pop(self.path, 1) - 1
        if depth > 0:
            self._depth[self.path] = depth
            return
        try:
            self.path.unlink()
        except OSError:
            pass

    def others_alive(self) -> list[int]:
        alive = []
        if not self.dir.is_dir():
            return alive
        for entry in self.dir.iterdir():
            try:
                pid = int(entry.name)
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            if controller_alive(pid):
                alive.append(pid)
                continue
            try:
                entry.unlink()  # a controller that died (kill -9) leaves its entry behind
            except OSError:
                pass
        return alive


def create_executions(campaign: Campaign, manifest: Manifest, specs: Iterable[ExecutionSpec]
                      ) -> Iterator[tuple[ExecutionRecord, str]]:
    """Record each spec as a new branch (journal "created"); yields (record, tip)."""
    journal = Journal(campaign.store)
    author = campaign.store.identity().decode("utf-8", "replace")
    chunk: list[tuple[ExecutionRecord, str]] = []

    def flush() -> Iterator[tuple[ExecutionRecord, str]]:
        # Inside a running Session (a search creating as it goes) the store is already staging, so batch()
        # did not write the commits: they must be on disk before the branches name them.
        campaign.store.flush_staged()
        todo = list(chunk)
        for _attempt in range(ID_DRAWS):
            # Each branch is created only where its id is free (a compare-and-swap from nothing), instead
            # of listing every branch of the campaign first: that listing made each run pay for the
            # campaign behind it. 48 random bits collide astronomically rarely: redraw and retry.
            taken = [(record, sha) for (record, sha), ok
                     in zip(todo, journal.try_create_branches([(r.id, sha) for r, sha in todo])) if not ok]
            if not taken:
                break
            redrawn: list[tuple[ExecutionRecord, str]] = []
            for record, _sha in taken:
                record.id = new_execution_id()
                redrawn.append((record, journal.create_commit(record)))
            campaign.store.flush_staged()
            done = {id(record) for record, _sha in taken}
            chunk[:] = [item for item in chunk if id(item[0]) not in done] + redrawn
            todo = redrawn
        else:
            raise RepositoryError(f"execution ids {', '.join(r.id for r, _ in todo)} are taken after "
                                  f"{ID_DRAWS} draws", hint="check the campaign's refs/heads/executions/")
        yield from list(chunk)
        chunk.clear()

    specs = iter(specs)
    while True:
        with campaign.store.batch():
            for spec in specs:
                record = ExecutionRecord(
                    id=new_execution_id(), campaign=manifest.name, commit=spec.commit,
                    command=spec.command or render_command(manifest.command, spec.parameters, manifest.shell),
                    parameters=dict(spec.parameters), profile=spec.profile, repeat=spec.repeat, search=spec.search,
                    author=author, created=utc_now(), rerun_of=spec.rerun_of)
                chunk.append((record, journal.create_commit(record)))
                if len(chunk) % 16 == 0:
                    gevent.sleep(0)  # a backend warming up meanwhile (connecting, submitting) progresses
                if len(chunk) >= CREATE_BATCH:
                    break
        if not chunk:
            return
        yield from flush()


CREATE_BATCH = 2000
ID_DRAWS = 5


class Session:
    """One controller's run over one campaign: backends per profile, progress, Ctrl-C handling."""

    def __init__(self, campaign: Campaign, manifest: Manifest, *, slots: int | None, progress: Progress,
                 on_result: Callable[[ExecutionRecord, str], None] | None = None, leave: str = "none",
                 on_points: Callable[[str, list[dict[str, Any]]], None] | None = None) -> None:
        self.campaign = campaign
        self.on_points = on_points  # each running execution's new metrics points, once (early stopping)
        self.leave = leave
        self.manifest = manifest
        self.slots = slots
        self.progress = progress
        self.summary = RunSummary()
        self.on_result = on_result
        self.controllers: list[Controller] = []

    def _interrupt(self) -> None:
        if self.summary.interrupted:
            return
        self.summary.interrupted = True
        self.progress.note("interrupted: stopping running executions (Ctrl-C again does nothing more; "
                           "wait for them to be recorded)")
        for controller in self.controllers:
            controller.stop()

    def prune(self, execution_id: str, grace: float, note: Any) -> bool:
        """Stop one running execution for its search (see Controller.prune); False where none runs it."""
        return any(controller.prune(execution_id, grace, note) for controller in self.controllers)

    def drive(self, profile: str, records: dict[str, ExecutionRecord], tips: dict[str, str],
              tasks: Iterable[Task], backend: Backend | None = None, started: gevent.Greenlet | None = None,
              adopted: Iterable[str] = (), reattached: Iterable[Task] = ()) -> None:
        # `resume` passes the backend its re-attached handles came from: it holds their slots.
        backend = backend or make_backend(profile, self.manifest, self.campaign.workdir, slots=self.slots)
        writer = JournalWriter(self.campaign.store)
        listener = JournalListener(writer, self.manifest, records, tips, self.progress, self.summary,
                                   self.on_result,
                                   running_commit_delay=backend.running_commit_delay)
        controller = Controller(backend, listener, self.campaign.store.archive, retry=self.manifest.retries,
                                staging=self.campaign.workdir / "staging", leave=self.leave,
                                packing=self.manifest.resources is not None,
                                capture=EnvironmentCapture(enabled=self.manifest.capture_environment))
        self.controllers.append(controller)
        follower = None
        if self.manifest.metrics is not None:
            from .metrics_follow import MetricsFollower

            follower = MetricsFollower(backend, self.manifest.metrics, listener.commit_metrics,
                                       on_points=self.on_points)
            listener.metrics = follower
            # Re-attached by a resume: never "launched" here, so followed from now on, from their first
            # byte (the commit holds the whole stream again: what the dead controller committed, then more).
            reattached = list(reattached)
            listed = tasks if isinstance(tasks, (list, tuple)) else ()
            for task in [*reattached, *listed]:
                if task.handle is not None:
                    follower.add(task.job.execution_id, task.handle)
        for execution_id in adopted:  # re-attached, but the dead controller's "running" commit never landed
            listener.journal_running(execution_id)
        watcher = gevent.spawn(self._show_waiting, backend.waiting_for)
        try:
            if started is not None:
                started.get()  # the warm-up begun while the executions were created (raises its error)
            else:
                backend.start()
            controller.run(tasks, reattached)
        finally:
            if watcher is not None:
                watcher.kill()
                self.progress.wait_on(None)
            if follower is not None:
                follower.close()
            writer.close()
            backend.close()
        for execution_id, exc in controller.errors:
            self.summary.errors.append(f"{execution_id}: {exc}")

    def _show_waiting(self, waiting_for: Callable[[], str | None]) -> None:
        """Once a second: what the backend waits on (a pending allocation), for the progress line."""
        while True:
            gevent.sleep(1.0)
            try:
                self.progress.wait_on(waiting_for())
            except Exception:  # noqa: BLE001 - a status line must never take the run down
                pass

    def run(self, groups: list[tuple[Any, ...]]) -> RunSummary:
        if self.campaign.store.identity_is_fallback():
            self.progress.note(f"no git identity is configured: results are recorded as "
                               f"{self.campaign.store.identity().decode('utf-8', 'replace')}; set yours with "
                               f"`git config --global user.name NAME` and `git config --global user.email EMAIL`")
        handler = gevent.signal_handler(signal.SIGINT, self._interrupt)
        term = gevent.signal_handler(signal.SIGTERM, self._interrupt)
        try:
            with ControllerRegistry(self.campaign):
                jobs = [gevent.spawn(self.drive, *group) for group in groups]
                gevent.joinall(jobs)
                for job in jobs:
                    if job.exception is not None:
                        raise job.exception
        finally:
            handler.cancel()
            term.cancel()
            self.progress.close()
        self.campaign.store.maintain()
        return self.summary


def _tasks(manifest: Manifest, records: dict[str, ExecutionRecord], order: list[str]) -> Iterator[Task]:
    for execution_id in order:
        record = records.get(execution_id)
        if record is not None:
            yield Task(job_for(manifest, record), attempt=record.attempt + 1 if record.attempt else 1)


def run_campaign(campaign: Campaign, *, assignments: Sequence[str] = (), grid: bool = False,
                 repeat: int | None = None, profile: str | None = None, slots: int | None = None,
                 snapshot: bool = False, progress: Progress | None = None, dry_run: bool = False,
                 leave: str = "none", missing: bool = False) -> RunSummary:
    """`expegit run`: create executions for HEAD (or a snapshot) and run them to the end.

    The specs are walked twice, lazily: once to count and check them before anything is created, once to
    create them as the run goes (see run_specs). Neither holds the grid in memory.
    """
    manifest = campaign.manifest
    profile = profile or manifest.profile
    backend = make_backend(profile, manifest, campaign.workdir, slots=slots)  # validates the profile first
    commit = code_commit(campaign, snapshot=snapshot and not dry_run)
    present: set[tuple[str, str]] | None = None
    if missing:
        records, _tips, _problems = RecordIndex(campaign.store).load()
        present = present_points(records.values())
        del records

    def planned() -> Iterator[ExecutionSpec]:
        specs = iter_specs(manifest, commit, profile, assignments=assignments, grid=grid, repeat=repeat)
        return specs if present is None else skip_present(specs, present)

    counted = [0, 0]  # specs to run, all specs

    def counting() -> Iterator[Mapping[str, Any]]:
        specs = iter_specs(manifest, commit, profile, assignments=assignments, grid=grid, repeat=repeat)
        for spec in specs:
            counted[1] += 1
            if present is None or (spec.commit, point_key(spec.parameters, spec.repeat)) not in present:
                counted[0] += 1
                yield spec.parameters

    try:
        points = counting()
        check_requests(manifest, backend, points)
        for _parameters in points:
            pass  # check_requests reads none when the manifest declares no resources: count them still
    except BaseException:
        backend.close()
        raise
    total = counted[0]
    if missing:
        (progress or Progress(0)).note(f"{counted[1] - total} of the {counted[1]} points already have an "
                                       f"execution at {commit[:8]}: running the {total} missing")
        if not total:
            backend.close()
            return RunSummary()
    if dry_run:
        summary = RunSummary(total=total)
        for spec in planned():
            print(render_command(manifest.command, spec.parameters, manifest.shell))
        return summary
    return run_specs(campaign, planned(), backend=backend, slots=slots, progress=progress, leave=leave,
                     total=total, profile=profile)


def run_specs(campaign: Campaign, specs: Iterable[ExecutionSpec], *, backend: Any = None, slots: int | None = None,
              progress: Progress | None = None, leave: str = "none", total: int | None = None,
              profile: str | None = None) -> RunSummary:
    """Create the executions of ``specs`` (all on one profile) as branches and run them to the end.

    `expegit run` and `expegit rerun` both come here, so a rerun is created, run and journaled exactly as
    the execution it repeats was. ``backend`` is the profile's, when the caller made it to validate early.
    The first CREATE_BATCH executions are created before the run starts (while the backend warms up); the
    rest in batches of CREATE_BATCH as slots take them. Why: with a grid of 1,000,000 points, creating
    every branch first held every record in memory and kept the slots idle for minutes. An interrupted
    run leaves the points it never reached uncreated; `expegit run --missing` creates and runs them.
    """
    manifest = campaign.manifest
    if profile is None:
        specs = list(specs)
        profiles = {spec.profile for spec in specs}
        if len(profiles) != 1:
            raise UsageError(f"executions to run on {len(profiles)} profiles at once: give one profile")
        profile = profiles.pop()
        total = len(specs)
    backend = backend or make_backend(profile, manifest, campaign.workdir, slots=slots)
    # Connecting, preparing the remote workdir and starting agents overlap with creating the branches:
    # both take a few tenths of a second, and the executions wait for both.
    warmup = gevent.spawn(backend.start, total)
    submitted = backend.submitted
    if not submitted.is_set():
        # A scheduler backend's first allocation waits in the queue for ~1 s at best: ask for it before
        # creating the branches (which keep this process busy), not after.
        warmup.link_exception(lambda _greenlet: submitted.set())  # a failed start reports at drive()
        submitted.wait(timeout=5.0)
    records: dict[str, ExecutionRecord] = {}
    tips: dict[str, str] = {}
    order: list[str] = []
    with ControllerRegistry(campaign):  # from the first created execution on, a resume must see this run
        created = create_executions(campaign, manifest, specs)
        first: list[str] = []
        try:
            for record, tip in created:
                records[record.id] = record
                tips[record.id] = tip
                order.append(record.id)
                first.append(record.id)
                if len(first) >= CREATE_BATCH:
                    break
        except BaseException:
            warmup.kill()
            backend.close()
            raise
        del specs  # the generator inside `created` holds what is left of them

        def tasks() -> Iterator[Task]:
            yield from _tasks(manifest, records, first)
            first.clear()
            for record, tip in created:  # the next batch is created when a slot takes the first of it
                records[record.id] = record
                tips[record.id] = tip
                order.append(record.id)
                yield Task(job_for(manifest, record), attempt=1)

        progress = progress or Progress(total if total is not None else len(order))
        progress.total = total if total is not None else len(order)
        session = Session(campaign, manifest, slots=slots, progress=progress, leave=leave)
        try:
            summary = session.run([(profile, records, tips, tasks(), backend, warmup)])
        except OrchestraError:
            if warmup.ready() and not warmup.successful():
                _remove_unlaunched(campaign, records, tips, order, progress)
            raise
        finally:
            created.close()
    summary.total = total if total is not None else len(order)
    summary.ids = order
    summary.not_started = sum(1 for r in records.values() if r.state == "created")
    summary.not_created = max(0, summary.total - len(order))
    return summary


def _remove_unlaunched(campaign: Campaign, records: Mapping[str, ExecutionRecord], tips: Mapping[str, str],
                       order: Sequence[str], progress: Progress) -> None:
    """After the profile could not be reached, delete the branches this run created: none ever ran.

    Why: each try against an unreachable host left its executions behind as `created` branches, for a
    resume to run on a profile that may never answer (and `status` counted them). Branches created earlier
    are not touched, nor any that moved past their created commit.
    """
    unlaunched = [(i, tips[i]) for i in order if i in records and records[i].state == "created" and i in tips]
    if not unlaunched:
        return
    removed = Journal(campaign.store).remove_branches(unlaunched)
    if removed:
        progress.note(f"removed the {len(removed)} execution(s) this run created: the profile was never reached")
