#!/usr/bin/env bash
# A SLURM cluster of one node on this machine, for the tests and for trying `hydra/launcher=slurm`: Debian's
# slurm-wlm and munge, munged (as the user munge), slurmctld and slurmd (as root) on this host, no accounting.
#
#   scripts/slurm.sh start    # or: make cluster
#   scripts/slurm.sh stop     # or: make cluster-stop (stops what `start` started, by PID; cancels the cluster's jobs)
#   scripts/slurm.sh status
#
# Settings (environment): SLURM_DIR (state, spool, logs, pid files; default /var/lib/harness-slurm: one per machine,
# like its slurm.conf, so that `start` from a second checkout or a CI clone finds the cluster running), PARTITION (debug),
# SLURM_CONF (/etc/slurm/slurm.conf, where sbatch, squeue and sinfo look when SLURM_CONF is unset), START_TIMEOUT
# (120 s). Needs root, or sudo without a password: slurmd starts each job as the user who submitted it.
#
# Partitions: $PARTITION (the default) holds this host, as `slurmd -C` describes it. `wide` adds a second node that
# never joins (State=FUTURE): a partition whose jobs could land on two nodes, for the test that refuses an SQLite
# store there; nothing submitted to it runs.
# Without accounting `sacct` fails; SLURM's job completion log ($SLURM_DIR/jobcomp.log, one line per job or array task
# that ended) records what ran.
set -euo pipefail
cd "$(dirname "$0")/.."
SLURM_DIR=$(realpath -m "${SLURM_DIR:-/var/lib/harness-slurm}")
PARTITION=${PARTITION:-debug}
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
START_TIMEOUT=${START_TIMEOUT:-120}
MARKER="# Written by scripts/slurm.sh"
MUNGE_KEY=/etc/munge/munge.key

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
fail() { echo "error: $*" >&2; exit 1; }

ensure_root() {
  [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null \
    || fail "a SLURM cluster needs root (slurmd starts jobs as their users): run as root, or allow sudo -n"
}

ensure_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  echo "installing Debian's slurm-wlm and munge (apt-get)..." >&2
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge)
  as_root "${install[@]}" >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root "${install[@]}" >/dev/null; } \
    || fail "could not install slurm-wlm and munge with apt-get"
}

munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
  if [ ! -s "$MUNGE_KEY" ]; then  # the package makes one; a machine set up by hand may lack it
    as_root mkdir -p /etc/munge
    as_root mungekey -c -k "$MUNGE_KEY"
    as_root chown munge:munge "$MUNGE_KEY" && as_root chmod 600 "$MUNGE_KEY"
  fi
  munge_answers && return  # a munged of this machine's own: used, never stopped by `stop`
  # Without systemd, /run/munge (the socket's directory) is not made at boot.
  as_root install -d -o munge -g munge -m 0755 /run/munge
  as_root install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  as_root runuser -u munge -- /usr/sbin/munged
  as_root cat /run/munge/munged.pid >"$SLURM_DIR/munged.pid"
  for _ in $(seq 1 50); do munge_answers && return; sleep 0.1; done
  fail "munged did not answer; see /var/log/munge/munged.log"
}

# slurm.conf for this host: one node as slurmd measures it, cores as the consumable resource.
render_conf() {
  local node
  node=$(slurmd -C | head -n 1)
  [[ $node == NodeName=* ]] || fail "slurmd -C did not describe this node: $node"
  cat <<EOF
$MARKER start: a cluster of one node on this host. Rewritten by every start.
ClusterName=harness
SlurmctldHost=$(hostname)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/jobcomp.log
$node State=UNKNOWN
NodeName=ghost NodeAddr=127.0.0.1 CPUs=1 State=FUTURE
PartitionName=$PARTITION Nodes=$(hostname) Default=YES MaxTime=INFINITE State=UP
PartitionName=wide Nodes=$(hostname),ghost MaxTime=INFINITE State=UP
EOF
}

write_conf() {
  if [ -e "$CONF" ] && ! grep -q "^$MARKER" "$CONF"; then
    fail "$CONF was not written by scripts/slurm.sh: this machine has a SLURM configuration of its own (use that" \
      "cluster, or set SLURM_CONF to another path)"
  fi
  local text; text=$(render_conf)
  if [ -e "$CONF" ] && [ "$text" = "$(cat "$CONF")" ]; then return 1; fi  # unchanged
  as_root mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$text" | as_root tee "$CONF" >/dev/null
}

alive() { [ -f "$1" ] && as_root kill -0 "$(cat "$1")" 2>/dev/null; }

start_daemons() {
  alive "$SLURM_DIR/slurmctld.pid" || as_root slurmctld -f "$CONF"
  alive "$SLURM_DIR/slurmd.pid" || as_root slurmd -f "$CONF"
}

node_state() { SLURM_CONF=$CONF sinfo -h -n "$(hostname)" -p "$PARTITION" -o %T 2>/dev/null | head -n 1; }

wait_until_it_answers() {
  local deadline=$((SECONDS + START_TIMEOUT)) state
  while [ $SECONDS -lt $deadline ]; do
    state=$(node_state || true)
    case "$state" in
      idle* | mixed* | allocated* | completing*)
        if SLURM_CONF=$CONF timeout 60 srun -p "$PARTITION" -N 1 -n 1 -t 1 hostname >/dev/null 2>&1; then
          echo "SLURM on $(hostname): partition $PARTITION, $(SLURM_CONF=$CONF sinfo -h -p "$PARTITION" -o '%c CPUs')" \
            "(state and logs in $SLURM_DIR)"
          [ "$CONF" = /etc/slurm/slurm.conf ] || echo "export SLURM_CONF=$CONF"
          return
        fi ;;
      down* | drain*)  # left so by an earlier stop or configuration: slurmd is back, so is the node
        SLURM_CONF=$CONF scontrol update nodename="$(hostname)" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  fail "the SLURM cluster did not answer within $START_TIMEOUT s; see $SLURM_DIR/slurmctld.log and slurmd.log"
}

start() {
  ensure_root
  ensure_packages
  mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool"
  ensure_munge
  if write_conf && alive "$SLURM_DIR/slurmctld.pid"; then
    stop_daemons  # running on an older slurm.conf (another host name, another node): start them on this one
  fi
  start_daemons
  wait_until_it_answers
}

stop_pid() {
  local file=$1 pid
  alive "$file" || { rm -f "$file"; return; }
  pid=$(cat "$file")
  as_root kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do as_root kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  as_root kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop_daemons() {
  stop_pid "$SLURM_DIR/slurmd.pid"
  stop_pid "$SLURM_DIR/slurmctld.pid"
}

stop() {
  if alive "$SLURM_DIR/slurmctld.pid"; then  # jobs would go on running under slurmstepd without their daemons
    SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null | xargs -r as_root env SLURM_CONF="$CONF" scancel 2>/dev/null || true
  fi
  stop_daemons
  stop_pid "$SLURM_DIR/munged.pid"  # only a munged that `start` started
  echo "stopped"
}

status() {
  local name
  for name in munged slurmctld slurmd; do
    if alive "$SLURM_DIR/$name.pid"; then echo "$name running (pid $(cat "$SLURM_DIR/$name.pid"))"
    else echo "$name not running (from this script)"; fi
  done
  SLURM_CONF=$CONF sinfo 2>/dev/null || echo "sinfo does not answer"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
