"""The environment probe: what a node offers an execution (OS, CPU, memory, GPUs, python, packages).

Run ON the node, by the python the execution's command will find on PATH (so ``pip freeze`` describes the
interpreter the command uses), with ``python3 -c SOURCE COMMIT``: runaway/environment_capture.py ships this
file's source inline in the command of the first execution per node and code commit. Standard library only
and Python 3.6 syntax: it runs wherever the agent runs.

Why a cache file on the node: listing the packages costs hundreds of milliseconds. The capture is written once per
(code commit, node, python path, install directories' mtimes) under ``~/.cache/orchestra/environment/`` and read back by the next probe;
a lock makes the executions of a first wave that start together run ``pip freeze`` once, not once each.

Output (stdout): one JSON object, see :func:`render`; runaway.environment_capture.parse_capture reads it.
"""
import hashlib
import json
import os
import platform
import re
import subprocess
import sys

FORMAT = 1
TIMEOUT = 60  # seconds for each external command: a hung pip or nvidia-smi must not hold the execution


def _read(path):
    try:
        with open(path, "r", errors="replace") as handle:
            return handle.read()
    except (OSError, IOError):
        return ""


def _run(argv):
    """stdout of ``argv``, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              timeout=TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


def parse_os_release(text):
    """PRETTY_NAME of an /etc/os-release text, or None."""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"\'') or None
    return None


def parse_cpuinfo(text):
    """The CPU model of a /proc/cpuinfo text (x86 'model name', ARM 'Model'/'CPU part'), or None."""
    for key in ("model name", "Model", "Processor", "cpu model"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return None


def parse_meminfo(text):
    """Bytes of RAM of a /proc/meminfo text, or None."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def parse_nvidia_query(text):
    """(gpus, driver) of ``nvidia-smi --query-gpu=name,memory.total,uuid,driver_version
    --format=csv,noheader,nounits``."""
    gpus, driver = [], None
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 4 or not fields[0]:
            continue
        gpu = {"name": fields[0]}
        if fields[1].isdigit():
            gpu["memory_mib"] = int(fields[1])
        if fields[2] and fields[2] != "[N/A]":
            gpu["uuid"] = fields[2]
        gpus.append(gpu)
        driver = driver or fields[3] or None
    return gpus, driver


def parse_cuda_version(text):
    """The CUDA version in nvidia-smi's banner ('CUDA Version: 12.2'), or None."""
    match = re.search(r"CUDA Version:\s*([0-9.]+)", text)
    return match.group(1) if match else None


def parse_driver_version(text):
    """The driver version in /proc/driver/nvidia/version ('... Kernel Module  535.104.05 ...'), or None."""
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", text)
    return match.group(1) if match else None


def parse_loaded_modules(value):
    """`module list` as the module systems keep it: LOADEDMODULES (Environment Modules and Lmod both set
    it), colon-separated. Read from the variable because `module` is a shell function a python child of the
    wrapper cannot call."""
    return [m for m in (value or "").split(":") if m]


def render_freeze(dists):
    """`pip freeze --all`'s text of (name, version, direct URL or None): `name==version`, or `name @ URL`
    for what was installed from a URL or a directory; the first of a name wins (sys.path order), sorted
    case-insensitively as pip does."""
    seen, lines = set(), []
    for name, version, url in dists:
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not name or key in seen:
            continue
        seen.add(key)
        lines.append((name.lower(), "%s @ %s" % (name, url) if url else "%s==%s" % (name, version)))
    return "".join(line + "\n" for _key, line in sorted(lines))


def freeze_packages():
    """The interpreter's installed distributions in `pip freeze` form.

    Why importlib.metadata first: `python -m pip freeze` spends most of its time importing pip (measured on
    this machine: 1.2 s of CPU against 0.25 s), and the first execution per node and commit waits for it.
    pip freeze is the fallback where importlib.metadata is missing (Python 3.6 and 3.7)."""
    try:
        import importlib.metadata as metadata
    except ImportError:
        return _run([sys.executable, "-m", "pip", "freeze", "--all"])
    dists = []
    for dist in metadata.distributions():
        try:
            name = dist.metadata["Name"]
            url = None
            direct = dist.read_text("direct_url.json")
            if direct:
                info = json.loads(direct)
                if "vcs_info" in info or "dir_info" in info or "archive_info" in info:
                    url = info.get("url")
            dists.append((name or "", dist.version or "", url))
        except Exception:  # one broken METADATA must not lose the others
            continue
    return render_freeze(dists)


def capture(environ):
    """The node's environment as a dict (see render); every part is best effort."""
    out = {"format": FORMAT}
    out["os"] = parse_os_release(_read("/etc/os-release"))
    out["kernel"] = platform.release() or None
    out["cpu"] = parse_cpuinfo(_read("/proc/cpuinfo")) or platform.processor() or None
    out["cores"] = os.cpu_count()
    out["memory"] = parse_meminfo(_read("/proc/meminfo"))
    out["python"] = "%s %s" % (platform.python_version(), sys.executable)
    gpus, driver, cuda = [], None, None
    query = _run(["nvidia-smi", "--query-gpu=name,memory.total,uuid,driver_version",
                  "--format=csv,noheader,nounits"])
    if query:
        gpus, driver = parse_nvidia_query(query)
        cuda = parse_cuda_version(_run(["nvidia-smi"]) or "")
    driver = driver or parse_driver_version(_read("/proc/driver/nvidia/version"))
    out["gpus"], out["driver"], out["cuda"] = gpus, driver, cuda
    out["pip_freeze"] = freeze_packages()
    conda = None
    if environ.get("CONDA_PREFIX"):
        conda = _run([environ.get("CONDA_EXE") or "conda", "list", "--export", "-p", environ["CONDA_PREFIX"]])
    out["conda_export"] = conda
    out["modules"] = (parse_loaded_modules(environ.get("LOADEDMODULES"))
                      if environ.get("LMOD_CMD") or environ.get("MODULESHOME") or environ.get("LOADEDMODULES") else [])
    return out


def render(data):
    """The probe's output: one JSON object, keys sorted (the same node gives the same bytes)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=True) + "\n"


def installed_stamp(environ):
    """Modification times of the directories packages are installed into (sys.path, conda-meta).

    Why in the cache key: a `pip install` or `conda install` between two runs at the same commit adds or
    renames entries there, so the next run captures again instead of recording the old versions."""
    dirs = [p for p in sys.path if p] + ([os.path.join(environ["CONDA_PREFIX"], "conda-meta")]
                                         if environ.get("CONDA_PREFIX") else [])
    stamps = []
    for path in dirs:
        try:
            stamps.append("%s=%d" % (path, os.stat(path).st_mtime_ns))
        except (OSError, IOError):
            continue
    return "\0".join(stamps)


def cache_path(environ, commit, node):
    base = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or "/tmp", ".cache")
    text = "%s\0%s\0%s\0%s" % (commit, node, sys.executable, installed_stamp(environ))
    key = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
    return os.path.join(base, "orchestra", "environment", "%s-%s.json" % (commit[:12], key))


def cached_capture(environ, commit):
    """The cached capture's text, or a fresh one written to the cache (under a lock)."""
    path = cache_path(environ, re.sub(r"[^0-9a-zA-Z]", "", commit) or "none", platform.node())
    text = _read(path)
    if text.endswith("\n"):
        return text
    try:
        import fcntl
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock = open(path + ".lock", "a")
    except (OSError, IOError, ImportError):
        return render(capture(environ))  # no cache here (read-only home): capture each time asked
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        text = _read(path)
        if text.endswith("\n"):
            return text
        text = render(capture(environ))
        tmp = "%s.%d" % (path, os.getpid())
        try:
            with open(tmp, "w") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except (OSError, IOError):
            pass
    return text


def main(argv):
    try:
        sys.stdout.write(cached_capture(os.environ, argv[0] if argv else "none"))
    except Exception as exc:  # never let the probe fail an execution: say what went wrong instead
        sys.stdout.write(render({"format": FORMAT, "error": "%s: %s" % (type(exc).__name__, exc)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
