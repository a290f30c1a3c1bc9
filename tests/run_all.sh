#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, brings up the real services
# (a loopback sshd + Slurm cluster, headless Chromium), then runs pytest.
#
#   bash tests/run_all.sh            # everything
#   bash tests/run_all.sh -k resume  # extra arguments go to pytest
#
# As root (CI, a container) it installs Debian packages itself; as a normal user it uses what is there,
# and the tests that need a missing service skip with the reason (under CI=true they never skip).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(git openssh-server openssh-client munge slurmctld slurmd slurm-client slurm-wlm-torque
                 chromium chromium-driver parallel)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "run_all: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# The console scripts (expegit, git-expegit, ...) land in this interpreter's scripts directory, which a
# version manager's shims may not know about yet: put it first so `git expegit` finds them.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

if [ -x tests/cluster/devcluster.sh ] || [ -f tests/cluster/devcluster.sh ]; then
  if [ "$(id -u)" = 0 ]; then
    # Take the cluster down afterwards only if this script brought it up: a developer's running cluster
    # (or another test run's) is left as it was.
    if ! bash tests/cluster/devcluster.sh status >/dev/null 2>&1; then
      trap 'bash tests/cluster/devcluster.sh down >/dev/null 2>&1 || true' EXIT
    fi
    bash tests/cluster/devcluster.sh up
  else
    echo "run_all: not root: the SSH/Slurm integration tests will skip (see tests/cluster/README.md)"
  fi
fi

python3 -m pytest -ra "$@" tests
