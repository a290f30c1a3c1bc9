#!/usr/bin/env bash
# devcluster.sh up|down|status|env — a real OpenSSH server and a real Slurm cluster on loopback.
#
# Why: the ssh and slurm backends must be tested against the real daemons users run (host keys,
# MaxSessions, sbatch/squeue/srun), not mocks. Everything lives under one directory in /tmp so that
# `down` + `rm -rf` leaves the machine as it was, and the munge/job users can traverse its parents.
#
#   up      install missing Debian packages (only if absent), create the `orchestra` user, start
#           sshd, munged, slurmctld and 4 slurmds (node[1-4], 4 CPUs each); idempotent; waits until
#           `scontrol ping` answers and every node is idle, or fails with the log tails.
#   down    scancel every job, stop daemons by pid file (checking /proc/PID/comm: PIDs are reused).
#   status  one line per component; exit 0 only when everything is up.
#   env     print the exports a test needs (also written to $DIR/env).
#   clean   down, then remove $DIR (keys included: the next `up` makes new ones).
#   restart-sshd  stop sshd and every session it serves (connections drop, as on a server restart
#           or a network cut), then start it again; detached executions keep running. Fault tests use it.
#
# Overrides: ORCHESTRA_DEVCLUSTER_DIR (/tmp/orchestra-devcluster), ORCHESTRA_DEVCLUSTER_SSH_PORT (2222),
# ORCHESTRA_DEVCLUSTER_SLURM_PORT (16817; slurmds use the 4 ports after 17000 + offset),
# ORCHESTRA_DEVCLUSTER_NODE_PORT (17001), ORCHESTRA_DEVCLUSTER_NODES (4), ORCHESTRA_DEVCLUSTER_CPUS (4),
# ORCHESTRA_DEVCLUSTER_USER (orchestra), ORCHESTRA_DEVCLUSTER_PEER (orchestra-peer: a second user with its
# own key, host alias devcluster-peer, for tests where two people push to one shared remote),
# ORCHESTRA_DEVCLUSTER_GROUP (orchestra-share: both users are members, as the group of a shared remote).
# A private instance beside the shared one needs its own DIR, ports and USER/PEER/GROUP (the users'
# authorized_keys are written by `up`).
set -euo pipefail

DIR=${ORCHESTRA_DEVCLUSTER_DIR:-/tmp/orchestra-devcluster}
SSH_PORT=${ORCHESTRA_DEVCLUSTER_SSH_PORT:-2222}
CTLD_PORT=${ORCHESTRA_DEVCLUSTER_SLURM_PORT:-16817}
NODE_BASE_PORT=${ORCHESTRA_DEVCLUSTER_NODE_PORT:-17001}
NODES=${ORCHESTRA_DEVCLUSTER_NODES:-4}
CPUS=${ORCHESTRA_DEVCLUSTER_CPUS:-4}
# Fake GPUs Slurm knows about (GRES): character devices that exist only for the tests, so gres binding,
# CUDA_VISIBLE_DEVICES and Orchestra's packing can be checked without a GPU.
GPUS=${ORCHESTRA_DEVCLUSTER_GPUS:-2}
MEMORY_MB=${ORCHESTRA_DEVCLUSTER_MEMORY_MB:-4096}
RUSER=${ORCHESTRA_DEVCLUSTER_USER:-orchestra}
PEER=${ORCHESTRA_DEVCLUSTER_PEER:-orchestra-peer}
SHARE_GROUP=${ORCHESTRA_DEVCLUSTER_GROUP:-orchestra-share}
WAIT_SECONDS=${ORCHESTRA_DEVCLUSTER_WAIT:-60}

SSHD_DIR=$DIR/ssh
MUNGE_DIR=$DIR/munge
SLURM_DIR=$DIR/slurm
SLURM_CONF_FILE=$SLURM_DIR/slurm.conf
export SLURM_CONF=$SLURM_CONF_FILE

log() { printf 'devcluster: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------- pids
pid_of() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

# alive PIDFILE COMM: true when the pid file names a live (non-zombie) process whose comm is COMM.
alive() {
    local pid; pid=$(pid_of "$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    # PID 1 here reaps late: a dead daemon shows as a zombie for a while.
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

stop_pidfile() {  # PIDFILE COMM
    local pid; pid=$(pid_of "$1")
    if alive "$1" "$2"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do alive "$1" "$2" || break; sleep 0.1; done
        if alive "$1" "$2"; then log "$2 ($pid) ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$1"
}

node_names() { local i; for i in $(seq 1 "$NODES"); do echo "node$i"; done; }

# ---------------------------------------------------------------------------------------- packages
ensure_packages() {
    local missing=()
    command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    [ -x /usr/sbin/munged ] || missing+=(munge)
    [ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
    [ -x /usr/sbin/slurmd ] || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v qsub >/dev/null || missing+=(slurm-wlm-torque)
    [ -x /usr/bin/python3 ] || missing+=(python3)
    command -v git >/dev/null || missing+=(git)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
}

ensure_user() {
    if ! id "$RUSER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$RUSER"
    fi
    # UsePAM no refuses a locked account ('!' in shadow): '*' means "no password, but not locked".
    usermod -p '*' "$RUSER"
    local home; home=$(getent passwd "$RUSER" | cut -d: -f6)
    chmod 0755 "$home"
    # A fast, quiet non-interactive startup: the backends parse command output.
    if [ ! -f "$home/.orchestra-devcluster" ]; then
        printf '# written by devcluster.sh: keep non-interactive shells fast and silent\ncase $- in *i*) ;; *) return ;; esac\n' >"$home/.bashrc"
        : >"$home/.orchestra-devcluster"
        chown "$RUSER:" "$home/.bashrc" "$home/.orchestra-devcluster"
    fi
    install -d -m 0700 -o "$RUSER" -g "$(id -gn "$RUSER")" "$home/.ssh"
}

# A second user and a group holding both: a shared git remote is written by several people, and tests
# of who may do what there (hooks' rewrite policy) need two real accounts behind the same sshd.
ensure_peer() {
    if ! id "$PEER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$PEER"
    fi
    usermod -p '*' "$PEER"
    local home; home=$(getent passwd "$PEER" | cut -d: -f6)
    chmod 0755 "$home"
    if [ ! -f "$home/.orchestra-devcluster" ]; then
        printf '# written by devcluster.sh: keep non-interactive shells fast and silent\ncase $- in *i*) ;; *) return ;; esac\n' >"$home/.bashrc"
        : >"$home/.orchestra-devcluster"
        chown "$PEER:" "$home/.bashrc" "$home/.orchestra-devcluster"
    fi
    install -d -m 0700 -o "$PEER" -g "$(id -gn "$PEER")" "$home/.ssh"
    # A shared remote belongs to whoever made it: git (>= 2.35.2) works in a repository another user owns
    # only once it is declared safe, as a server's administrator declares its shared remotes.
    if ! git config --file "$home/.gitconfig" --get-all safe.directory 2>/dev/null | grep -qxF '*'; then
        git config --file "$home/.gitconfig" --add safe.directory '*'
        chown "$PEER:" "$home/.gitconfig"
    fi
    getent group "$SHARE_GROUP" >/dev/null 2>&1 || groupadd "$SHARE_GROUP"
    usermod -a -G "$SHARE_GROUP" "$RUSER"
    usermod -a -G "$SHARE_GROUP" "$PEER"
}

setup_peer_ssh() {
    [ -f "$SSHD_DIR/id_ed25519_peer" ] || ssh-keygen -q -t ed25519 -N '' -C devcluster-peer -f "$SSHD_DIR/id_ed25519_peer"
    chmod 0600 "$SSHD_DIR/id_ed25519_peer"
    local home; home=$(getent passwd "$PEER" | cut -d: -f6)
    install -m 0600 -o "$PEER" -g "$(id -gn "$PEER")" "$SSHD_DIR/id_ed25519_peer.pub" "$home/.ssh/authorized_keys"
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        chown "$SUDO_USER" "$SSHD_DIR/id_ed25519_peer" "$SSHD_DIR/id_ed25519_peer.pub"
    fi
}

# --------------------------------------------------------------------------------------------- sshd
setup_ssh() {
    install -d -m 0755 "$SSHD_DIR"
    install -d -m 0755 /run/sshd
    [ -f "$SSHD_DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C devcluster-host -f "$SSHD_DIR/ssh_host_ed25519_key"
    [ -f "$SSHD_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C devcluster-client -f "$SSHD_DIR/id_ed25519"
    chmod 0600 "$SSHD_DIR/id_ed25519" "$SSHD_DIR/ssh_host_ed25519_key"
    local home; home=$(getent passwd "$RUSER" | cut -d: -f6)
    install -m 0600 -o "$RUSER" -g "$(id -gn "$RUSER")" "$SSHD_DIR/id_ed25519.pub" "$home/.ssh/authorized_keys"
    local hostkey; hostkey=$(cut -d' ' -f1,2 "$SSHD_DIR/ssh_host_ed25519_key.pub")
    printf '[127.0.0.1]:%s,[localhost]:%s %s\n' "$SSH_PORT" "$SSH_PORT" "$hostkey" >"$SSHD_DIR/known_hosts"
    cat >"$SSHD_DIR/sshd_config" <<EOF
# written by devcluster.sh
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $SSHD_DIR/ssh_host_ed25519_key
PidFile $SSHD_DIR/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $RUSER $PEER
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
# Tests use the server as its own ProxyJump bastion.
AllowTcpForwarding yes
# MaxSessions stays at its default (10), as on real clusters: the client must bound channels.
MaxStartups 64:30:128
SetEnv SLURM_CONF=$SLURM_CONF_FILE
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    cat >"$SSHD_DIR/ssh_config" <<EOF
# written by devcluster.sh: ssh -F $SSHD_DIR/ssh_config devcluster
Host devcluster
    HostName 127.0.0.1
    Port $SSH_PORT
    User $RUSER
    IdentityFile $SSHD_DIR/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $SSHD_DIR/known_hosts
    StrictHostKeyChecking yes
    GSSAPIAuthentication no
    KexAlgorithms curve25519-sha256
# The same server reached through a bastion (itself): exercises ProxyJump.
Host devcluster-jump
    HostName 127.0.0.1
    Port $SSH_PORT
    User $RUSER
    IdentityFile $SSHD_DIR/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $SSHD_DIR/known_hosts
    StrictHostKeyChecking yes
    ProxyJump devcluster
# A second person on the same server (see ensure_peer).
Host devcluster-peer
    HostName 127.0.0.1
    Port $SSH_PORT
    User $PEER
    IdentityFile $SSHD_DIR/id_ed25519_peer
    IdentitiesOnly yes
    UserKnownHostsFile $SSHD_DIR/known_hosts
    StrictHostKeyChecking yes
    GSSAPIAuthentication no
    KexAlgorithms curve25519-sha256
EOF
    /usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config" || die "sshd_config invalid"
    # Under sudo, hand the client side (key, known_hosts, ssh_config) to the invoking user so tests can
    # run unprivileged against a cluster root brought up.
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        chown "$SUDO_USER" "$SSHD_DIR/id_ed25519" "$SSHD_DIR/id_ed25519.pub" "$SSHD_DIR/known_hosts" "$SSHD_DIR/ssh_config"
    fi
}

start_sshd() {
    if alive "$SSHD_DIR/sshd.pid" sshd; then
        # A newer devcluster.sh may have changed sshd_config: make the running server re-read it.
        if ! cmp -s "$SSHD_DIR/sshd_config" "$SSHD_DIR/sshd_config.applied"; then
            kill -HUP "$(pid_of "$SSHD_DIR/sshd.pid")"
            cp "$SSHD_DIR/sshd_config" "$SSHD_DIR/sshd_config.applied"
            sleep 0.3
        fi
        return
    fi
    cp "$SSHD_DIR/sshd_config" "$SSHD_DIR/sshd_config.applied"
    /usr/sbin/sshd -f "$SSHD_DIR/sshd_config" -E "$SSHD_DIR/sshd.log"
}

# -------------------------------------------------------------------------------------------- munge
setup_munge() {
    install -d -m 0711 -o munge -g munge "$MUNGE_DIR"
    if [ ! -f "$MUNGE_DIR/munge.key" ]; then
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"; chmod 0400 "$MUNGE_DIR/munge.key"
}

start_munge() {
    if alive "$MUNGE_DIR/munged.pid" munged; then return; fi
    rm -f "$MUNGE_DIR/munge.socket" "$MUNGE_DIR/munge.socket.lock"
    runuser -u munge -- /usr/sbin/munged --force --socket="$MUNGE_DIR/munge.socket" \
        --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_DIR/munged.pid" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
}

# -------------------------------------------------------------------------------------------- slurm
setup_slurm() {
    install -d -m 0755 "$SLURM_DIR" "$SLURM_DIR/state" "$SLURM_DIR/spool" "$SLURM_DIR/log" "$SLURM_DIR/dev"
    local last_port=$((NODE_BASE_PORT + NODES - 1)) g
    # Every node is this host, so the nodes share the device files; Slurm still hands out indexes per node.
    for ((g = 0; g < GPUS; g++)); do
        [ -c "$SLURM_DIR/dev/nvidia$g" ] || mknod -m 0666 "$SLURM_DIR/dev/nvidia$g" c 195 "$g"
    done
    cat >"$SLURM_DIR/gres.conf" <<EOF
# written by devcluster.sh: fake GPUs (see GPUS)
NodeName=node[1-$NODES] Name=gpu File=$SLURM_DIR/dev/nvidia[0-$((GPUS - 1))]
EOF
    cat >"$SLURM_CONF_FILE" <<EOF
# written by devcluster.sh
ClusterName=orchestra-dev
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1
MailProg=/bin/true
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
# A dead slurmd is noticed in seconds, not the default 5 minutes (fault tests kill one).
SlurmdTimeout=10
MinJobAge=30
InactiveLimit=0
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool/%n
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd-%n.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd-%n.log
GresTypes=gpu
NodeName=node[1-$NODES] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$NODE_BASE_PORT-$last_port] CPUs=$CPUS RealMemory=$MEMORY_MB Gres=gpu:$GPUS State=UNKNOWN
# Preemption for real: a job in "urgent" preempts jobs of "preemptible" (requeued) and "scavenger"
# (cancelled) on node$NODES. The default partition is never preempted, so other tests are unaffected.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=preemptible Nodes=node$NODES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=scavenger Nodes=node$NODES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=CANCEL
PartitionName=urgent Nodes=node$NODES MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
}

start_slurm() {
    if ! alive "$SLURM_DIR/slurmctld.pid" slurmctld; then
        /usr/sbin/slurmctld -c -f "$SLURM_CONF_FILE"
        cp "$SLURM_CONF_FILE" "$SLURM_CONF_FILE.applied"
    elif ! cmp -s "$SLURM_CONF_FILE" "$SLURM_CONF_FILE.applied"; then
        # A newer devcluster.sh changed slurm.conf: the running daemons re-read it.
        scontrol reconfigure >/dev/null 2>&1 || log "scontrol reconfigure failed"
        cp "$SLURM_CONF_FILE" "$SLURM_CONF_FILE.applied"
    fi
    local n
    for n in $(node_names); do
        if ! alive "$SLURM_DIR/slurmd-$n.pid" slurmd; then
            install -d -m 0755 "$SLURM_DIR/spool/$n"
            /usr/sbin/slurmd -N "$n" -f "$SLURM_CONF_FILE"
        fi
    done
}

tails() {
    local f
    for f in "$SSHD_DIR/sshd.log" "$MUNGE_DIR/munged.log" "$SLURM_DIR/log/slurmctld.log" "$SLURM_DIR"/log/slurmd-*.log; do
        [ -f "$f" ] || continue
        printf '==> %s <==\n' "$f" >&2; tail -n 15 "$f" >&2
    done
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_SECONDS)) states
    until scontrol ping 2>/dev/null | grep -q 'is UP'; do
        [ $SECONDS -lt $deadline ] || { tails; die "slurmctld did not answer 'scontrol ping' within ${WAIT_SECONDS}s"; }
        sleep 0.2
    done
    while :; do
        # Ready = every node answering (idle, or running jobs of a concurrent test session); a node DOWN
        # after a restart (e.g. a slurmd killed by a fault test) is resumed.
        states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u)
        if [ "$(printf '%s\n' "$states" | grep -cE ' (idle|alloc|mix|comp)$' || true)" -ge "$NODES" ]; then break; fi
        if printf '%s\n' "$states" | grep -qE ' (down|drain|drng|fail)\*?$'; then
            scontrol update nodename="node[1-$NODES]" state=resume >/dev/null 2>&1 || true
        fi
        [ $SECONDS -lt $deadline ] || { printf '%s\n' "$states" >&2; tails; die "nodes not all idle within ${WAIT_SECONDS}s"; }
        sleep 0.2
    done
    # sshd must accept the client key with the strict known_hosts we wrote.
    until ssh -F "$SSHD_DIR/ssh_config" -o BatchMode=yes -o ConnectTimeout=5 devcluster true 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { ssh -F "$SSHD_DIR/ssh_config" -o BatchMode=yes devcluster true || true; tails; die "ssh devcluster failed"; }
        sleep 0.2
    done
    until ssh -F "$SSHD_DIR/ssh_config" -o BatchMode=yes -o ConnectTimeout=5 devcluster-peer true 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { ssh -F "$SSHD_DIR/ssh_config" -o BatchMode=yes devcluster-peer true || true; tails; die "ssh devcluster-peer failed"; }
        sleep 0.2
    done
}

print_env() {
    cat <<EOF
export ORCHESTRA_DEVCLUSTER_DIR=$DIR
export ORCHESTRA_DEVCLUSTER_SSH_CONFIG=$SSHD_DIR/ssh_config
export ORCHESTRA_DEVCLUSTER_HOST=devcluster
export ORCHESTRA_DEVCLUSTER_USER=$RUSER
export ORCHESTRA_DEVCLUSTER_PEER=$PEER
export ORCHESTRA_DEVCLUSTER_PEER_HOST=devcluster-peer
export ORCHESTRA_DEVCLUSTER_GROUP=$SHARE_GROUP
export ORCHESTRA_DEVCLUSTER_NODES=$NODES
export ORCHESTRA_DEVCLUSTER_CPUS=$CPUS
export ORCHESTRA_DEVCLUSTER_GPUS=$GPUS
export ORCHESTRA_DEVCLUSTER_MEMORY_MB=$MEMORY_MB
export SLURM_CONF=$SLURM_CONF_FILE
EOF
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "'up' must run as root (creates a user, starts sshd/munged/slurmd)"
    local t0=$SECONDS
    ensure_packages
    install -d -m 0755 "$DIR"
    ensure_user
    ensure_peer
    setup_ssh
    setup_peer_ssh
    setup_munge
    setup_slurm
    start_sshd
    start_munge
    for _ in $(seq 1 50); do [ -S "$MUNGE_DIR/munge.socket" ] && break; sleep 0.1; done
    [ -S "$MUNGE_DIR/munge.socket" ] || { tails; die "munged did not create its socket"; }
    start_slurm
    wait_ready
    print_env >"$DIR/env"
    log "up in $((SECONDS - t0))s; exports (also in $DIR/env):"
    print_env
}

cmd_down() {
    [ -d "$DIR" ] || { log "nothing under $DIR"; return 0; }
    if alive "$SLURM_DIR/slurmctld.pid" slurmctld; then
        local jobs; jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            scancel $jobs 2>/dev/null || true
            # Let slurmd end the job steps (placeholders, executions) before it goes away itself.
            for _ in $(seq 1 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
        fi
    fi
    local n
    for n in $(node_names); do stop_pidfile "$SLURM_DIR/slurmd-$n.pid" slurmd; done
    # Leftover job steps (sleep placeholders, agents) of the test user die with their slurmds gone.
    stop_pidfile "$SLURM_DIR/slurmctld.pid" slurmctld
    stop_pidfile "$MUNGE_DIR/munged.pid" munged
    stop_pidfile "$SSHD_DIR/sshd.pid" sshd
    log "down"
}

cmd_restart_sshd() {
    [ "$(id -u)" = 0 ] || die "'restart-sshd' must run as root"
    local pid; pid=$(pid_of "$SSHD_DIR/sshd.pid")
    alive "$SSHD_DIR/sshd.pid" sshd || die "sshd is not running"
    # The per-connection sshd processes are the listener's children: kill them too, or a restart
    # would leave established connections up and test nothing.
    local children; children=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -s ' \n' ' ' || true)
    kill -TERM "$pid" 2>/dev/null || true
    [ -n "${children// /}" ] && kill -KILL $children 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$SSHD_DIR/sshd.pid" sshd || break; sleep 0.1; done
    rm -f "$SSHD_DIR/sshd.pid"
    sleep "${ORCHESTRA_DEVCLUSTER_SSHD_DOWN:-1}"
    start_sshd
    for _ in $(seq 1 50); do alive "$SSHD_DIR/sshd.pid" sshd && break; sleep 0.1; done
    log "sshd restarted (dropped $(echo $children | wc -w) session(s))"
}

cmd_status() {
    local rc=0 n
    report() { if alive "$1" "$2"; then echo "$3: up (pid $(pid_of "$1"))"; else echo "$3: down"; rc=1; fi; }
    report "$SSHD_DIR/sshd.pid" sshd "sshd 127.0.0.1:$SSH_PORT"
    report "$MUNGE_DIR/munged.pid" munged "munged"
    report "$SLURM_DIR/slurmctld.pid" slurmctld "slurmctld :$CTLD_PORT"
    for n in $(node_names); do report "$SLURM_DIR/slurmd-$n.pid" slurmd "slurmd $n"; done
    if [ $rc = 0 ]; then
        scontrol ping 2>/dev/null | sed 's/^/scontrol ping: /' || rc=1
        sinfo -h -N -o 'node %N: %t' 2>/dev/null || rc=1
        echo "jobs: $(squeue -h 2>/dev/null | wc -l)"
    fi
    return $rc
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    clean) cmd_down; rm -rf "$DIR"; log "removed $DIR" ;;
    restart-sshd) cmd_restart_sshd ;;
    *) echo "usage: $0 up|down|status|env|clean|restart-sshd" >&2; exit 2 ;;
esac
