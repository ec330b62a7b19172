#!/usr/bin/env bash
# Start a private one-node Slurm cluster on this machine (Debian 12, root, no systemd) for the
# tests in tests/test_slurm*.py. Idempotent: a second call while it runs is a fast no-op.
#
#   bash tests/slurm/start.sh            # munge + slurmctld + slurmd (status via squeue)
#   SLURM_LOCAL_DBD=1 bash tests/slurm/start.sh   # + private MariaDB + slurmdbd (sacct works)
#   bash tests/slurm/stop.sh [--purge]   # stops exactly the daemons started here (pid files)
#
# Everything lives under $SYNTHCTX_SLURM_STATE (default /var/spool/synthctx-slurm): configs in
# etc/, state, spool, logs and pid files. /etc/slurm/{slurm,gres}.conf become symlinks to the
# configs there (Slurm commands inside jobs only look at /etc/slurm; stop.sh --purge removes
# the links). The node declares fake GPUs (GRES files are
# symlinks to /dev/null, see ../shared/reference/slurm-local.md) so GPU rules can be scheduled.
#
# Knobs: SLURM_LOCAL_GPUS (default 1), SLURM_LOCAL_GPU_TYPE (default "fake": typed GRES, so
# `gpu_model: fake` requests work too), SLURM_LOCAL_DBD (0/1), SLURM_LOCAL_ACCOUNT (default test).
set -euo pipefail

B=${SYNTHCTX_SLURM_STATE:-/var/spool/synthctx-slurm}
GPUS=${SLURM_LOCAL_GPUS:-1}
GPU_TYPE=${SLURM_LOCAL_GPU_TYPE-fake}
DBD=${SLURM_LOCAL_DBD:-0}
ACCOUNT=${SLURM_LOCAL_ACCOUNT:-test}
HOST=$(hostname -s)
export SLURM_CONF=$B/etc/slurm.conf

log() { echo "[slurm-local] $*" >&2; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.2 s
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Commands inside jobs cannot rely on SLURM_CONF: the Slurm jobstep executor strips every
# SLURM_* variable before its inner `srun`, which then reads the compiled-in
# /etc/slurm/slurm.conf. Link that path to our config unless a foreign one is there.
link_confs() {
    mkdir -p /etc/slurm
    for f in slurm.conf gres.conf; do
        if [[ -L /etc/slurm/$f || ! -e /etc/slurm/$f ]]; then
            [[ $(readlink "/etc/slurm/$f") == "$B/etc/$f" ]] || ln -sfn "$B/etc/$f" "/etc/slurm/$f"
        elif ! cmp -s "/etc/slurm/$f" "$B/etc/$f"; then
            log "/etc/slurm/$f exists and is not ours: jobs' inner srun would use it; move it away"; exit 1
        fi
    done
}

# Fast path: everything already up.
if alive "$B/run/slurmctld.pid" && alive "$B/run/slurmd.pid" \
    && { [[ $DBD != 1 ]] || alive "$B/run/slurmdbd.pid"; } \
    && scontrol ping 2>/dev/null | grep -q UP; then
    link_confs
    log "already running (SLURM_CONF=$SLURM_CONF)"
    exit 0
fi

# 1. Packages (the meta-package slurm-wlm adds only -dev/exotic plugins; these suffice).
pkgs=(munge slurmctld slurmd slurm-client)
[[ $DBD == 1 ]] && pkgs+=(slurmdbd mariadb-server mariadb-client)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi

mkdir -p "$B"/{etc,ctld,d,log,run,fakegpu}

# 2. munge (reuse a munged that is already running and not ours).
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chown munge:munge /etc/munge/munge.key && chmod 0600 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0755 "$B/run/munge"
    runuser -u munge -- munged --pid-file="$B/run/munge/munged.pid"
    wait_for 10 bash -c 'munge -n | unmunge' || { log "munged did not come up"; exit 1; }
fi

# 3. Configs.
for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null "$B/fakegpu/nvidia$i"; done
hw=$(slurmd -C | head -1 | grep -o 'CPUs=.*' | sed 's/ *UpTime=.*//')
gres="gpu:$GPUS"; [[ -n $GPU_TYPE ]] && gres="gpu:$GPU_TYPE:$GPUS"
gres_type=""; [[ -n $GPU_TYPE ]] && gres_type="Type=$GPU_TYPE"
if [[ $DBD == 1 ]]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else
    accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
nia=""
getent hosts "$HOST" | grep -q '^127\.' && nia="CommunicationParameters=NoInAddrAny"
cat > "$B/etc/slurm.conf.new" <<CONF
# Written by tests/slurm/start.sh: a private one-node test cluster.
ClusterName=synthctx
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$B/ctld
SlurmdSpoolDir=$B/d
SlurmctldPidFile=$B/run/slurmctld.pid
SlurmdPidFile=$B/run/slurmd.pid
SlurmctldLogFile=$B/log/slurmctld.log
SlurmdLogFile=$B/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
$accounting
JobCompType=jobcomp/filetxt
JobCompLoc=$B/log/jobcomp.txt
# Keep finished jobs visible to squeue for 5 minutes (the plugin's squeue status needs it).
MinJobAge=300
MailProg=/bin/true
ReturnToService=2
GresTypes=gpu
$nia
NodeName=$HOST NodeAddr=127.0.0.1 $hw Gres=$gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
echo "NodeName=$HOST Name=gpu $gres_type File=$B/fakegpu/nvidia[0-$((GPUS - 1))]" > "$B/etc/gres.conf.new"
changed=0
for f in slurm.conf gres.conf; do
    if ! cmp -s "$B/etc/$f.new" "$B/etc/$f"; then mv "$B/etc/$f.new" "$B/etc/$f"; changed=1; else rm "$B/etc/$f.new"; fi
done
echo "export SLURM_CONF=$SLURM_CONF" > "$B/env.sh"
link_confs
# A changed config (e.g. other GPU count or dbd mode) needs fresh daemons.
if ((changed)); then
    for d in slurmd slurmctld; do
        if alive "$B/run/$d.pid"; then log "config changed: restarting $d"; kill "$(cat "$B/run/$d.pid")"; fi
    done
    wait_for 10 bash -c "! pgrep -F '$B/run/slurmctld.pid' && ! pgrep -F '$B/run/slurmd.pid'" || true
fi

# 4. (optional) private MariaDB + slurmdbd: no TCP port, no /var/lib/mysql.
if [[ $DBD == 1 ]]; then
    install -d -o mysql -g mysql "$B/run/mysql"
    sock=$B/run/mysql/mysqld.sock
    if ! alive "$B/run/mysql/mariadbd.pid"; then
        if [[ ! -d $B/mysql/mysql ]]; then
            mariadb-install-db --no-defaults --user=mysql --datadir="$B/mysql" \
                --auth-root-authentication-method=socket --skip-test-db >"$B/log/mariadb-install.log" 2>&1
        fi
        setsid runuser -u mysql -- mariadbd --no-defaults --datadir="$B/mysql" --skip-networking \
            --socket="$sock" --pid-file="$B/run/mysql/mariadbd.pid" --log-error="$B/run/mysql/mariadb.log" \
            --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
        wait_for 30 mariadb --no-defaults --socket="$sock" -e 'select 1' || { log "mariadbd did not come up"; exit 1; }
        [[ -s $B/run/mysql/mariadbd.pid ]] || wait_for 5 test -s "$B/run/mysql/mariadbd.pid"
    fi
    [[ -s $B/run/slurmdb.pass ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc A-Za-z0-9 > "$B/run/slurmdb.pass")
    pass=$(cat "$B/run/slurmdb.pass")
    mariadb --no-defaults --socket="$sock" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    (umask 077; cat > "$B/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$B/log/slurmdbd.log
PidFile=$B/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
CONF
)
    if ! alive "$B/run/slurmdbd.pid"; then
        MYSQL_UNIX_PORT=$sock slurmdbd
        wait_for 20 bash -c "ss -ltn 2>/dev/null | grep -q ':6819 ' || sacctmgr -n list cluster" \
            || { log "slurmdbd did not come up (see $B/log/slurmdbd.log)"; exit 1; }
    fi
fi

# 5. slurmctld, then slurmd; wait for the node to be idle.
if ! alive "$B/run/slurmctld.pid"; then
    slurmctld
    wait_for 20 bash -c 'scontrol ping | grep -q UP' || { log "slurmctld did not come up (see $B/log/slurmctld.log)"; exit 1; }
fi
if ! alive "$B/run/slurmd.pid"; then
    slurmd
    wait_for 10 test -s "$B/run/slurmd.pid"
fi
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null; }
if ! wait_for 20 bash -c "sinfo -h -n '$HOST' -o %T | grep -qx idle"; then
    # Drain reasons survive restarts (StateSaveLocation): resume once.
    scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    wait_for 20 bash -c "sinfo -h -n '$HOST' -o %T | grep -qx idle" \
        || { log "node is '$(node_state)', not idle (see $B/log/slurmd.log)"; exit 1; }
fi
if [[ $DBD == 1 ]]; then
    sacctmgr -i add account "$ACCOUNT" >/dev/null 2>&1 || true
    sacctmgr -i add user root account="$ACCOUNT" >/dev/null 2>&1 || true
fi
log "up: node $HOST idle, $GPUS fake GPU(s) ${GPU_TYPE:+of type $GPU_TYPE}, dbd=$DBD; export SLURM_CONF=$SLURM_CONF"
