#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started, by their pid files only (never by name).
# Idempotent. `--purge` also removes the state dir (configs, job state, database, logs).
set -uo pipefail

B=${SYNTHCTX_SLURM_STATE:-/var/spool/synthctx-slurm}
stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "[slurm-local] stopped $name ($pid)" >&2
    fi
    rm -f "$file"
}
# Jobs still running belong to this cluster: cancel them first so slurmstepd exits.
if [[ -s $B/etc/slurm.conf && -s $B/run/slurmctld.pid ]] && kill -0 "$(cat "$B/run/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF=$B/etc/slurm.conf timeout 10 scancel --user=root 2>/dev/null || true
fi
stop_pid slurmd "$B/run/slurmd.pid"
stop_pid slurmctld "$B/run/slurmctld.pid"
stop_pid slurmdbd "$B/run/slurmdbd.pid"
stop_pid mariadbd "$B/run/mysql/mariadbd.pid"
stop_pid munged "$B/run/munge/munged.pid"
if [[ ${1:-} == --purge ]]; then
    for f in slurm.conf gres.conf; do
        [[ -L /etc/slurm/$f && $(readlink "/etc/slurm/$f") == "$B/etc/$f" ]] && rm -f "/etc/slurm/$f"
    done
    rm -rf "$B"
    echo "[slurm-local] removed $B" >&2
fi
exit 0
