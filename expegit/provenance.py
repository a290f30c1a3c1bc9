"""`expegit export --format ro-crate`: the campaign as a Workflow Run RO-Crate (Process Run Crate profile).

RO-Crate is how workflow systems and repositories (WorkflowHub, Zenodo) exchange provenance: one
``CreateAction`` per execution says which code ran (instrument), with what (object: its parameters), what
it made (result: its output files), when, by whom and how it ended. ``render_crate`` is pure (records and
file listings in, the ``ro-crate-metadata.json`` document out); ``parse_crate`` reads one back into the
facts it states; ``write_crate`` is the one function that touches disk, copying each output file from its
branch into the crate so the crate holds the data it describes.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra.errors import UsageError
from orchestra.execution import ExecutionRecord, render_branch_name

from .campaign import Campaign

METADATA = "ro-crate-metadata.json"
RO_CRATE = "https://w3id.org/ro/crate/1.1"
PROCESS_RUN = "https://w3id.org/ro/wfrun/process/0.5"
STATUS = {  # schema.org ActionStatusType per execution state
    "finished": "http://schema.org/CompletedActionStatus",
    "failed": "http://schema.org/FailedActionStatus",
    "running": "http://schema.org/ActiveActionStatus",
    "created": "http://schema.org/PotentialActionStatus",
    "cancelled": "http://schema.org/FailedActionStatus",
}
_AUTHOR = re.compile(r"^(.*?)\s*<([^>]*)>\s*$")


def _person(author: str) -> dict[str, Any]:
    match = _AUTHOR.match(author)
    name, email = (match.group(1), match.group(2)) if match else (author, "")
    entity: dict[str, Any] = {"@id": f"#person-{email or name}".replace(" ", "_"), "@type": "Person",
                              "name": name or email}
    if email:
        entity["email"] = email
    return entity


def render_crate(name: str, command: str, records: Sequence[ExecutionRecord],
                 files: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The JSON-LD document. ``files``: execution id → crate-relative paths of the files it produced."""
    graph: dict[str, dict[str, Any]] = {}
    actions, data_parts = [], []
    for r in records:
        instrument_id = f"#code-{r.commit}"
        graph.setdefault(instrument_id, {
            "@id": instrument_id, "@type": "SoftwareApplication", "name": f"{name} at {r.commit[:12]}",
            "softwareVersion": r.commit, "description": f"the campaign's command: {command}"})
        objects = []
        for pname, value in r.parameters.items():
            pid = f"#{r.id}-param-{pname}"
            graph[pid] = {"@id": pid, "@type": "PropertyValue", "name": pname,
                          "value": value if isinstance(value, (int, float, str, bool)) else json.dumps(value)}
            objects.append({"@id": pid})
        results = []
        for path in files.get(r.id, ()):
            graph[path] = {"@id": path, "@type": "File", "name": os.path.basename(path)}
            results.append({"@id": path})
            data_parts.append({"@id": path})
        action: dict[str, Any] = {
            "@id": f"#execution-{r.id}", "@type": "CreateAction", "name": f"execution {r.id}",
            "description": r.command, "identifier": render_branch_name(r.id),
            "instrument": {"@id": instrument_id}, "object": objects, "result": results,
            "actionStatus": {"@id": STATUS[r.state]}}
        if r.started or r.created:
            action["startTime"] = r.started or r.created
        if r.ended:
            action["endTime"] = r.ended
        if r.author:
            person = _person(r.author)
            graph.setdefault(person["@id"], person)
            action["agent"] = {"@id": person["@id"]}
        if r.state in ("failed", "cancelled") and r.error:
            action["error"] = r.error
        if r.rerun_of:
            action["isBasedOn"] = {"@id": f"#execution-{r.rerun_of}"}
        graph[action["@id"]] = action
        actions.append({"@id": action["@id"]})
    root: dict[str, Any] = {"@id": "./", "@type": "Dataset", "name": name,
            "description": f"Orchestra campaign {name}: {len(records)} executions",
            "conformsTo": {"@id": PROCESS_RUN}, "hasPart": data_parts, "mentions": actions,
            "license": {"@id": "#license"}}
    if records:
        root["datePublished"] = max((r.ended or r.created or "") for r in records) or None
    if not root.get("datePublished"):
        root.pop("datePublished", None)
    descriptor = {"@id": METADATA, "@type": "CreativeWork", "conformsTo": {"@id": RO_CRATE}, "about": {"@id": "./"}}
    profile = {"@id": PROCESS_RUN, "@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"}
    license_ = {"@id": "#license", "@type": "CreativeWork", "name": "the campaign's own terms",
                "description": "Orchestra does not choose a license for a campaign's results: set one here."}
    return {"@context": "https://w3id.org/ro/crate/1.1/context",
            "@graph": [descriptor, root, profile, license_, *graph.values()]}


def render_metadata(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def parse_crate(text: str) -> list[dict[str, Any]]:
    """The executions a crate's metadata describes: id, state, commit, parameters, results, times."""
    graph = {e["@id"]: e for e in json.loads(text)["@graph"]}
    states = {v: k for k, v in STATUS.items() if k != "cancelled"}
    out = []
    for entity in graph.values():
        if entity.get("@type") != "CreateAction":
            continue
        params = {graph[o["@id"]]["name"]: graph[o["@id"]]["value"] for o in entity.get("object", [])}
        out.append({
            "id": entity["@id"].removeprefix("#execution-"),
            "state": states.get(entity["actionStatus"]["@id"]),
            "commit": graph[entity["instrument"]["@id"]]["softwareVersion"],
            "parameters": params, "results": [o["@id"] for o in entity.get("result", [])],
            "startTime": entity.get("startTime"), "endTime": entity.get("endTime"),
            "agent": graph[entity["agent"]["@id"]].get("name") if "agent" in entity else None})
    return out


def write_crate(campaign: Campaign, records: Sequence[ExecutionRecord], directory: Path) -> Path:
    """Write the crate into ``directory`` (new, empty, or an earlier crate, which is replaced)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or
                               (any(directory.iterdir()) and not (directory / METADATA).exists())):
        raise UsageError(f"{directory} exists and is no RO-Crate: it would be overwritten",
                         hint="give a new directory with -o")
    store = campaign.store
    files: dict[str, list[str]] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for r in records:
        tip = store.ref("refs/heads/" + render_branch_name(r.id))
        if tip is None:
            continue
        for path in r.outputs:
            data = store.read_path(tip, path)
            if data is None or ".." in path.split("/"):
                continue
            relative = f"executions/{r.id}/{path}"
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files.setdefault(r.id, []).append(relative)
    manifest = campaign.manifest
    document = render_crate(manifest.name, manifest.command, records, files)
    tmp = directory / f".{METADATA}.{os.getpid()}"
    tmp.write_text(render_metadata(document), "utf-8")
    os.replace(tmp, directory / METADATA)
    return directory / METADATA
