#!/usr/bin/env bash
# A one-node SLURM with accounting, for tests/test_slurm_real.py: Debian's slurm-wlm (slurmctld, slurmd),
# slurmdbd on MariaDB, munge; ProctrackType=proctrack/linuxproc and TaskPlugin=task/none (no cgroups needed).
#
#   sudo bash tests/cluster/slurm-up.sh        # installs what is missing (as root), then starts what is not running
#   SLURM_UP_INSTALL=0 bash tests/cluster/slurm-up.sh    # the tests' call: start, but install nothing
#
# Idempotent: a second call finds the node up and returns at once. Exit status 0 when `sinfo` shows the
# node idle or busy and `sacct` answers; 3 when it cannot start here (not root, no packages, no apt), with one
# line saying why (the tests then skip with that line). Nothing here is used by hpelib itself.
set -uo pipefail

STATE=/var/lib/hpelib-slurm              # this script's own files: the configs it wrote, logs
CLUSTER=hpelib
NODE=$(hostname -s)
log() { echo "slurm-up: $*" >&2; }
cannot() { log "cannot start SLURM here: $*"; exit 3; }

up() { sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)' \
       && sacct -n -X -S now-1minutes >/dev/null 2>&1; }

[ "$(id -u)" = 0 ] || { up && exit 0; cannot "not root (and no SLURM is running)"; }

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
   || ! command -v munged >/dev/null; then
  [ "${SLURM_UP_INSTALL:-1}" = 1 ] || cannot "slurm-wlm, slurmdbd, mariadb-server or munge is not installed (as root: bash tests/cluster/slurm-up.sh installs them)"
  command -v apt-get >/dev/null || cannot "no apt-get to install slurm-wlm, slurmdbd, mariadb-server and munge"
  log "installing slurm-wlm slurmdbd mariadb-server munge (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm slurmdbd mariadb-server munge >"/tmp/slurm-up-apt.log" 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm slurmdbd \
         mariadb-server munge >>"/tmp/slurm-up-apt.log" 2>&1; } || cannot "apt-get install failed (/tmp/slurm-up-apt.log)"
fi

mkdir -p "$STATE" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/mysqld /etc/slurm
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld

# munge: the key, then the daemon
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
  || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged --force || cannot "munged did not start"
  sleep 1
fi

# MariaDB with the accounting database
if ! mariadb -e 'select 1' >/dev/null 2>&1; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null 2>&1
  (mariadbd-safe --user=mysql --skip-networking=0 --bind-address=127.0.0.1 >"$STATE/mariadb.out" 2>&1 &)
  for _ in $(seq 60); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb -e 'select 1' >/dev/null 2>&1 || cannot "MariaDB did not start ($STATE/mariadb.out)"
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" || cannot "could not create the accounting database"

# each config file is replaced only when its content changes; a change restarts the daemons that read it
changed=""
install_conf() {  # install_conf PATH MODE: stdin becomes PATH if it differs
  local new; new=$(cat)
  if [ ! -f "$1" ] || [ "$new" != "$(cat "$1")" ]; then printf '%s\n' "$new" >"$1"; chmod "$2" "$1"; changed="$changed $1"; fi
}
install_conf /etc/slurm/slurmdbd.conf 600 <<CONF
# written by hpelib's tests/cluster/slurm-up.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF

MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
CPUS=$(nproc)
install_conf /etc/slurm/slurm.conf 644 <<CONF
# written by hpelib's tests/cluster/slurm-up.sh: one node, accounting through slurmdbd
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits for this long before it starts again (SLURM's default: 120 s)
AuthInfo=cred_expire=20
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
ReturnToService=2
MinJobAge=30
KillWait=10
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

if [ -z "$changed" ] && up; then log "already up (node $NODE, cluster $CLUSTER)"; exit 0; fi
if [ -n "$changed" ]; then  # new settings: the daemons start again (running jobs survive a restart)
  for d in slurmd slurmctld slurmdbd; do pkill -x "$d" && while pgrep -x "$d" >/dev/null; do sleep 0.2; done; done
fi
pgrep -x slurmdbd >/dev/null || slurmdbd || cannot "slurmdbd did not start (/var/log/slurm/slurmdbd.log)"
for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || slurmctld || cannot "slurmctld did not start (/var/log/slurm/slurmctld.log)"
pgrep -x slurmd >/dev/null || slurmd || cannot "slurmd did not start (/var/log/slurm/slurmd.log)"
for _ in $(seq 60); do
  up && { log "up: node $NODE ($CPUS CPUs, $MEM_MB MB), cluster $CLUSTER with accounting"; exit 0; }
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  sleep 1
done
cannot "the node did not come up: $(sinfo -h -o '%N %T %E' 2>&1 | head -1) (/var/log/slurm/)"
