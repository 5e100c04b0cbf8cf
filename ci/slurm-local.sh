#!/usr/bin/env bash
# A throwaway single-node SLURM on localhost, for hpcq's CI and the SLURM tests
# (recipe and its pitfalls: ../shared/docs/slurm-local.md). Debian/Ubuntu, as root, no systemd:
#   bash ci/slurm-local.sh up     # install, configure, start munged + slurmctld + slurmd, wait idle
#   bash ci/slurm-local.sh down   # cancel root's jobs, stop the daemons by their pidfiles
set -euo pipefail

PART=debug
STATE=/var/lib/slurm/slurmctld
SPOOL=/var/lib/slurm/slurmd

log() { printf '[slurm-local] %s\n' "$*" >&2; }
# alive PIDFILE NAME: the pidfile names a live process called NAME (pidfiles can be stale)
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

install_pkgs() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
     && command -v sbatch >/dev/null && command -v munged >/dev/null; then return; fi
  log "installing slurmctld slurmd slurm-client munge"
  apt-get update -q
  # without systemd the postinst scripts cannot start services: harmless messages
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge
}

start_munge() {
  alive /run/munge/munged.pid munged && return
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge   # made by systemd elsewhere
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)
  getent hosts "$host" >/dev/null || echo "127.0.1.1 $host" >> /etc/hosts  # srun and Hydra resolve it
  mkdir -p /etc/slurm
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=hpcqci
SlurmctldHost=${host}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
StateSaveLocation=${STATE}
SlurmdSpoolDir=${SPOOL}
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# the PyPI MPICH speaks only PMI-2; --mpi=none would start singletons without an error
MpiDefault=pmi2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=${PART} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  install -d -o slurm -g slurm "$STATE" /var/log/slurm
  install -d "$SPOOL"
}

start_slurm() {
  alive /run/slurmctld.pid slurmctld || /usr/sbin/slurmctld -c
  alive /run/slurmd.pid slurmd || /usr/sbin/slurmd
  local i st=""
  for i in $(seq 1 60); do
    st=$(sinfo -h -N -p "$PART" -o '%T' 2>/dev/null || true)
    [ "$st" = idle ] && { log "node idle after ${i}s"; return 0; }
    sleep 1
  done
  log "node not idle after 60 s (state '$st')"
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  return 1
}

stop_pid() {  # stop_pid PID: TERM, wait up to 20 s, then KILL
  local i
  kill "$1" 2>/dev/null || return 0
  for i in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$1" 2>/dev/null || true
}

down() {
  if alive /run/slurmctld.pid slurmctld; then scancel --user=root 2>/dev/null || true; sleep 1; fi
  for d in slurmd slurmctld; do
    if alive "/run/$d.pid" "$d"; then stop_pid "$(cat "/run/$d.pid")"; fi
    rm -f "/run/$d.pid"
  done
  if alive /run/munge/munged.pid munged; then stop_pid "$(cat /run/munge/munged.pid)"; fi
}

case "${1:-up}" in
  up) install_pkgs; start_munge; write_conf; start_slurm ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
