#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for testing the pipeline's SLURM profile.
#
#   tests/slurm/cluster.sh start    install (if needed), configure, start munged, slurmctld and
#                                   slurmd by hand, wait until sinfo shows the node idle
#   tests/slurm/cluster.sh stop     stop exactly the daemons `start` started (by their PIDs)
#                                   and remove the slurm.conf that `start` wrote
#   tests/slurm/cluster.sh status   sinfo and the recorded PIDs
#
# Needs root and Debian's packages (slurm-wlm 22.05 on Debian 12): it runs
# `apt-get install --no-install-recommends slurmctld slurmd slurm-client munge` when they are
# missing (and `apt-get update` first if that fails). There is no systemd: the daemons run in
# the foreground (-D / -F), detached with setsid, and their PIDs are written to $STATE/*.pid.
#
# The configuration must be /etc/slurm/slurm.conf: the SLURM executor plugin strips SLURM_CONF
# from the environment before it calls srun inside a job, so a config anywhere else makes every
# job fail with "Could not establish a configuration source". An existing slurm.conf that this
# script did not write (no MARKER line) is never touched: `start` exits 3 instead.
#
# Exit status: 0 ok; 1 a daemon failed to come up (logs are printed); 3 SLURM cannot be set up
# here (not root, no apt-get, a foreign slurm.conf, daemons already running): the caller skips.
# Environment: HRTA_SLURM_STATE (default /var/tmp/hrta-slurm) holds PIDs, logs and spool dirs;
# HRTA_SLURM_WAIT (default 60) seconds to wait for the node to become idle;
# HRTA_SLURM_PARTITION (default main, as in workflow/profiles/slurm) the one partition's name.
set -euo pipefail

STATE=${HRTA_SLURM_STATE:-/var/tmp/hrta-slurm}
WAIT=${HRTA_SLURM_WAIT:-60}
CONF=/etc/slurm/slurm.conf
MARKER="# written by hrta-bench tests/slurm/cluster.sh"
PARTITION=${HRTA_SLURM_PARTITION:-main}  # the profile's default slurm_partition
PACKAGES=(slurmctld slurmd slurm-client munge)
DAEMONS=(munged slurmctld slurmd)  # start order; stop runs in reverse

log() { echo "cluster.sh: $*" >&2; }
cannot() { log "cannot set up SLURM here: $*"; exit 3; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

have_binaries() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sinfo >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null
}

# One apt-get at a time: the browser test (hrta.report.browser.install_chromium) may install
# Chromium in another pytest worker at the same moment, and apt-get fails at once on a held
# lock. Both take this lock; DPkg::Lock::Timeout waits for any other apt user.
APT_LOCK=/tmp/hrta-bench-apt.lock
apt_get() {
    flock "$APT_LOCK" apt-get -o DPkg::Lock::Timeout=600 "$@"
}

install_packages() {
    have_binaries && return 0
    command -v apt-get >/dev/null || cannot "SLURM is not installed and there is no apt-get"
    local t0; t0=$(now)
    export DEBIAN_FRONTEND=noninteractive
    if ! apt_get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt_get update -q >>"$STATE/apt.log" 2>&1 || { tail -n 20 "$STATE/apt.log" >&2; exit 1; }
        apt_get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE/apt.log" 2>&1 \
            || { tail -n 20 "$STATE/apt.log" >&2; exit 1; }
    fi
    have_binaries || { log "packages installed but binaries missing"; exit 1; }
    log "installed ${PACKAGES[*]} in $(elapsed "$t0") s"
}

# The pid recorded for daemon $1, if that process is still alive and still is that daemon
# (guards against a PID reused by an unrelated process).
live_pid() {
    local name=$1 pid
    [[ -f $STATE/$name.pid ]] || return 1
    pid=$(<"$STATE/$name.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(</proc/$pid/comm) == "$name"* ]] || return 1
    echo "$pid"
}

write_munge_key() {
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile="$key" --force
        log "created $key"
    fi
    chown munge:munge "$key"
    chmod 0400 "$key"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
        cannot "$CONF exists and was not written by this script; not touching it"
    fi
    # slurmd -C prints this node's real hardware line, e.g.
    # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
    local node_line host
    node_line=$(slurmd -C | grep '^NodeName=')
    host=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node_line")
    mkdir -p /etc/slurm "$STATE/slurmctld" "$STATE/slurmd"
    cat >"$CONF" <<EOF
$MARKER
# A single-node test cluster; see tests/slurm/cluster.sh. Not for production use.
ClusterName=hrta-test
# Loopback addresses: works even where the host name does not resolve.
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
# No cgroups in a container or VM without systemd: track processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd: sacct cannot answer, so the profile's status command must be squeue, and
# squeue must keep finished jobs visible long enough (seconds).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pidfile
SlurmdPidFile=$STATE/slurmd.pidfile
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $CONF for node $host"
}

# Start "$@" detached in the foreground mode of daemon $name; record its PID.
launch() {
    local name=$1; shift
    setsid "$@" </dev/null >"$STATE/$name.out" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${limit} s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

node_idle() { [[ $(sinfo -h -N -o '%T' 2>/dev/null) == idle ]]; }
munge_works() { munge -n | unmunge; }
no_active_jobs() { [[ -z $(squeue -h -t RUNNING,COMPLETING,PENDING -o '%i' 2>/dev/null) ]]; }

dump_logs() {
    local f
    for f in "$STATE"/*.out "$STATE"/*.log; do
        [[ -f $f ]] || continue
        echo "--- $f (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
}

start() {
    [[ $(id -u) == 0 ]] || cannot "not root (uid $(id -u)); the daemons and /etc/slurm need root"
    mkdir -p "$STATE"
    local name
    for name in "${DAEMONS[@]}"; do
        if live_pid "$name" >/dev/null; then
            cannot "$name already started by this script (PID $(live_pid "$name")); run stop first"
        fi
        if command -v pgrep >/dev/null && pgrep -x "$name" >/dev/null; then
            cannot "a $name not started by this script is running"
        fi
    done
    install_packages
    local t0; t0=$(now)
    write_munge_key
    write_conf

    install -d -o munge -g munge -m 0755 /run/munge
    # munged must run as the owner of the key; setpriv execs, so $! is munged itself.
    launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for 20 "munged" munge_works || { dump_logs; stop; exit 1; }

    # -c: start from a clean slate (no jobs or node states left from an earlier run).
    launch slurmctld slurmctld -D -c
    wait_for 30 "slurmctld" scontrol ping || { dump_logs; stop; exit 1; }
    launch slurmd slurmd -D
    wait_for "$WAIT" "the node to become idle" node_idle || {
        sinfo -N -l >&2 || true; dump_logs; stop; exit 1; }
    log "daemons up and node idle in $(elapsed "$t0") s"
    sinfo >&2
}

stop() {
    local i name pid t0
    # Jobs still on this private cluster would leave slurmstepd processes behind: cancel them.
    if live_pid slurmctld >/dev/null && command -v scancel >/dev/null; then
        scancel --full --user="$(id -un)" 2>/dev/null || true
        wait_for 15 "cancelled jobs to end" no_active_jobs || true
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        if pid=$(live_pid "$name"); then
            t0=$(now); kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                [[ -d /proc/$pid ]] || break
                sleep 0.2
            done
            if [[ -d /proc/$pid ]]; then
                log "$name (PID $pid) ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            log "stopped $name (PID $pid) in $(elapsed "$t0") s"
        fi
        rm -f "$STATE/$name.pid"
    done
    # Leave no configuration that points at the stopped controller: with it, every later
    # `scontrol show config` (which the SLURM executor plugin runs whenever Snakemake starts,
    # even for local runs) waits 9 s for a controller that is gone before it fails.
    if [[ -f $CONF ]] && grep -qxF "$MARKER" "$CONF"; then
        rm -f "$CONF"
        log "removed $CONF"
    fi
}

status() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        if pid=$(live_pid "$name"); then echo "$name: PID $pid"; else echo "$name: not running"; fi
    done
    sinfo
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
