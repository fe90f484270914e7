#!/usr/bin/env bash
# A real SLURM on this one machine, for the tests and for trying cluster=slurm: a controller and two slurmd daemons
# acting as two nodes (n1, n2; one CPU each), munge for authentication.
#   scripts/slurm_cluster.sh start    # idempotent: does nothing but wait when it is already up
#   scripts/slurm_cluster.sh status   # sinfo, or exit 1 when it is down
#   scripts/slurm_cluster.sh stop
# Needs root and Debian's packages: apt-get install -y slurm-wlm munge (it installs nothing itself).
# SLURM_CONF (default /etc/slurm/slurm.conf) is where the config is written.
set -euo pipefail

CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
HOST=$(hostname)
NODES=(n1 n2)

need() {
    for bin in munged mungekey slurmctld slurmd sinfo scontrol; do
        command -v "$bin" >/dev/null || { echo "slurm_cluster.sh: $bin not found: apt-get install -y slurm-wlm munge" >&2; exit 2; }
    done
    [ "$(id -u)" = 0 ] || { echo "slurm_cluster.sh: run it as root (it starts system daemons)" >&2; exit 2; }
}

write_conf() {
    mkdir -p "$(dirname "$CONF")" /var/spool/slurmctld /var/log/slurm /run/slurm
    for n in "${NODES[@]}"; do mkdir -p "/var/spool/slurmd/$n"; done
    cat >"$CONF" <<CONF
# written by scripts/slurm_cluster.sh: one machine acting as two nodes
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# a requeued job waits this long (the credential lifetime, default 120 s) before it starts again
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MpiDefault=none
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=1 State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # a daemon is running: its pid file names a live process

up() { sinfo -h -o '%T' 2>/dev/null | grep -q idle && [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -cE 'idle|alloc|mix')" = 2 ]; }

start() {
    need
    if up; then sinfo; return 0; fi
    write_conf
    # the node names must resolve (Lightning's DDP rendezvous takes the first node's name as MASTER_ADDR)
    for n in "${NODES[@]}"; do getent hosts "$n" >/dev/null || echo "127.0.0.1 $n" >>/etc/hosts; done
    if [ ! -s /etc/munge/munge.key ]; then mungekey -c -f >/dev/null 2>&1 || mungekey -c; fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    alive /run/munge/munged.pid || runuser -u munge -- munged
    alive /run/slurmctld.pid || slurmctld -f "$CONF"
    for n in "${NODES[@]}"; do alive "/run/slurmd-$n.pid" || slurmd -f "$CONF" -N "$n"; done
    for _ in $(seq 60); do
        if up; then
            scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true
            sinfo; return 0
        fi
        sleep 1
    done
    echo "slurm_cluster.sh: the nodes did not come up; see /var/log/slurm/" >&2
    sinfo -N -l >&2 || true
    exit 1
}

stop() {
    scontrol shutdown >/dev/null 2>&1 || true
    for _ in $(seq 20); do
        alive /run/slurmctld.pid || alive /run/slurmd-n1.pid || alive /run/slurmd-n2.pid || break
        sleep 0.5
    done
    echo "stopped"
}

status() { up && sinfo || { echo "SLURM is not up (scripts/slurm_cluster.sh start)"; exit 1; }; }

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
