#!/usr/bin/env bash
# Stop the single-node SLURM started by slurm/start.sh (slurmd, slurmctld, and munged if start.sh
# started it). Jobs still running are killed; SLURM's saved state stays in slurm/state/.
set -uo pipefail

SLURM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$SLURM_DIR/state"
say() { echo "[slurm/stop.sh] $*"; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL
    local name="$1" pidfile="$2" pid
    if [[ ! -f "$pidfile" ]] || ! pid="$(cat "$pidfile")" || ! kill -0 "$pid" 2>/dev/null; then
        say "$name is not running"; return 0
    fi
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || { say "stopped $name (pid $pid)"; return 0; }; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null; say "killed $name (pid $pid) after 15 s"
}

stop_pidfile slurmd "$STATE/slurmd.pid"
stop_pidfile slurmctld "$STATE/slurmctld.pid"
if [[ -f "$STATE/munged.started-by-us" ]]; then
    stop_pidfile munged /run/munge/munged.pid
    rm -f "$STATE/munged.started-by-us"
fi
