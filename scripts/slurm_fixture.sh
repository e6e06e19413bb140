#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing the SLURM workflow profile.
#
#   scripts/slurm_fixture.sh up      install slurm-wlm + munge if absent, write /etc/slurm/slurm.conf
#                                    and gres.conf (one fake GPU), start munged, slurmctld, slurmd,
#                                    wait until the node is idle
#   scripts/slurm_fixture.sh down    stop exactly the daemons `up` started (PIDs in the state dir)
#   scripts/slurm_fixture.sh status  print the recorded daemons and `sinfo`
#
# Needs root (the daemons run as root, as on a test box; munged runs as the munge user) and, if
# SLURM is not installed yet, apt-get. Exit status 3 means "cannot run here" (not root, no apt-get,
# or a slurm.conf not written by this script already in /etc/slurm): callers skip, not fail.
#
# The node is declared with site-sized resources (CPUs, memory, one GPU backed by /dev/null) and
# `SlurmdParameters=config_overrides`, so the requests in profiles/slurm fit on a small test box.
# Jobs see CUDA_VISIBLE_DEVICES=0 without a GPU behind it: code must ask torch.cuda.is_available().
#
# Environment: VDC_SLURM_DIR (state, logs, PIDs; default /tmp/vdc-slurm),
#              VDC_SLURM_CPUS (declared CPUs, default 32), VDC_SLURM_MEM_MB (declared memory, default 196608).
set -euo pipefail

STATE=${VDC_SLURM_DIR:-/tmp/vdc-slurm}
CPUS=${VDC_SLURM_CPUS:-32}
MEM_MB=${VDC_SLURM_MEM_MB:-196608}
CONF_DIR=/etc/slurm
MARKER="# written by vdc scripts/slurm_fixture.sh"
DAEMONS=(munged slurmctld slurmd)

log() { echo "slurm_fixture: $*" >&2; }
cannot() { log "cannot run here: $*"; exit 3; }

# PID of a daemon we started, if it is still running (not a zombie, same program).
live_pid() {
    local name=$1 pidfile="$STATE/$1.pid" pid stat
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ $stat != Z* ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    echo "$pid"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || cannot "SLURM is not installed and there is no apt-get"
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 || { cat "$STATE/apt.log" >&2; cannot "apt-get update failed"; }
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
        || { tail -20 "$STATE/apt.log" >&2; cannot "apt-get install slurm-wlm munge failed"; }
}

write_config() {
    mkdir -p "$CONF_DIR" "$STATE/spool/ctld" "$STATE/spool/d"
    for f in slurm.conf gres.conf; do
        if [[ -e $CONF_DIR/$f ]] && ! grep -qF "$MARKER" "$CONF_DIR/$f"; then
            cannot "$CONF_DIR/$f exists and was not written by this script (a real SLURM node?); not touching it"
        fi
    done
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER (test fixture; state in $STATE)
ClusterName=vdctest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
EOF
}

start_daemon() {  # name, then the command line (run detached, output to the state dir)
    local name=$1; shift
    setsid "$@" </dev/null >"$STATE/$name.out" 2>&1 &
    echo $! >"$STATE/$name.pid"
}

node_state() { sinfo -h -N -n localhost -o %t 2>/dev/null | head -1; }

up() {
    [[ $(id -u) == 0 ]] || cannot "needs root (the SLURM daemons run as root)"
    mkdir -p "$STATE"
    install_packages
    write_config

    if ! live_pid munged >/dev/null; then
        if [[ ! -s /etc/munge/munge.key ]]; then
            setpriv --reuid=munge --regid=munge --clear-groups mungekey --create >/dev/null
        fi
        install -d -o munge -g munge -m 0755 /run/munge
        install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
        start_daemon munged setpriv --reuid=munge --regid=munge --clear-groups munged -F
    fi
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n </dev/null | unmunge >/dev/null || { cat "$STATE/munged.out" >&2; cannot "munged did not start"; }

    live_pid slurmctld >/dev/null || start_daemon slurmctld slurmctld -D
    live_pid slurmd >/dev/null || start_daemon slurmd slurmd -D -N localhost

    local state=""
    for i in $(seq 120); do
        state=$(node_state)
        case $state in
            idle|mix|alloc) break ;;
            drain*|drng|inval|down*|fail*)
                # a drained node from an earlier run's saved state: bring it back
                scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        for d in slurmctld slurmd; do
            live_pid $d >/dev/null || { tail -20 "$STATE/$d.out" "$STATE/$d.log" >&2 2>/dev/null; cannot "$d exited"; }
        done
        sleep 0.5
    done
    [[ $state == idle || $state == mix || $state == alloc ]] \
        || { tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2; cannot "node did not become idle (state: ${state:-none})"; }
    log "up: node localhost $state; daemons: $(for d in "${DAEMONS[@]}"; do printf '%s=%s ' $d "$(live_pid $d || echo -)"; done)"
}

down() {
    local d pid
    for d in slurmd slurmctld munged; do
        if pid=$(live_pid $d); then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do live_pid $d >/dev/null || break; sleep 0.2; done
            if live_pid $d >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
            log "stopped $d ($pid)"
        fi
        rm -f "$STATE/$d.pid"
    done
    for f in slurm.conf gres.conf; do
        if [[ -e $CONF_DIR/$f ]] && grep -qF "$MARKER" "$CONF_DIR/$f"; then rm -f "$CONF_DIR/$f"; fi
    done
}

status() {
    for d in "${DAEMONS[@]}"; do printf '%s %s\n' "$d" "$(live_pid $d || echo 'not running')"; done
    sinfo 2>&1 || true
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
