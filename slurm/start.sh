#!/usr/bin/env bash
# Start a single-node SLURM on this machine: munge, slurmctld, slurmd, all as root.
#
#   slurm/start.sh        # idempotent: if SLURM already answers with the node up, says so and exits 0
#   slurm/stop.sh         # stops the daemons this script started
#
# Fills slurm/slurm.conf.in and writes it to /etc/slurm/slurm.conf (where sinfo/sbatch look), keeps
# state, spool and logs under slurm/state/ (gitignored), waits until `sinfo` shows the node idle,
# and fails loudly with the daemon's log tail when something does not come up.
# Installs Debian's slurmctld, slurmd, munge and slurm-client with apt-get when they are missing.
set -euo pipefail

SLURM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$SLURM_DIR/state"
LOGS="$STATE/log"
CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"
WAIT_S="${SLURM_START_WAIT_S:-60}"

say() { echo "[slurm/start.sh] $*"; }
die() { echo "[slurm/start.sh] ERROR: $*" >&2; exit 1; }
tail_log() {  # tail_log FILE: print the last lines of a daemon log to stderr
    if [[ -f "$1" ]]; then echo "----- last lines of $1 -----" >&2; tail -n 30 "$1" >&2; echo "-----" >&2
    else echo "(no log at $1)" >&2; fi
}
node_state() { sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n1 | tr -d '*~#!%$@^-'; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---- already up? -----------------------------------------------------------------------------
if command -v sinfo >/dev/null 2>&1 && [[ -f "$CONF" ]]; then
    st="$(node_state || true)"
    if [[ "$st" =~ ^(idle|mix|alloc|comp)$ ]]; then
        say "SLURM is already up: node $HOST is $st ($CONF); logs in $LOGS"
        exit 0
    fi
fi

[[ "$(id -u)" == 0 ]] || die "run as root: the daemons, /etc/slurm/slurm.conf and apt-get need it"

# ---- packages --------------------------------------------------------------------------------
missing=()
for bin in slurmctld slurmd munged sbatch sinfo; do
    command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || missing+=("$bin")
done
if (( ${#missing[@]} )); then
    say "installing SLURM and munge (missing: ${missing[*]})"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd munge slurm-client \
        || die "apt-get install of slurmctld slurmd munge slurm-client failed (see above)"
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---- config ----------------------------------------------------------------------------------
mkdir -p "$STATE/ctld" "$STATE/spool" "$LOGS" /etc/slurm
CPUS="$(nproc)"
MEM_MB="$(free -m | awk '/^Mem:/ {print $2}')"
MEM_MB=$(( MEM_MB > 1024 ? MEM_MB - 512 : MEM_MB ))   # leave the OS some room
sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@STATE@|$STATE|g" \
    "$SLURM_DIR/slurm.conf.in" > "$CONF.tmp"
mv "$CONF.tmp" "$CONF"
say "wrote $CONF (node $HOST, $CPUS CPUs, $MEM_MB MB, state in $STATE)"

# ---- munge -----------------------------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged || { tail_log /var/log/munge/munged.log; die "munged did not start"; }
    touch "$STATE/munged.started-by-us"
    for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || { tail_log /var/log/munge/munged.log; die "munge does not answer"; }
fi

# ---- slurmctld -------------------------------------------------------------------------------
if ! pid_alive "$STATE/slurmctld.pid"; then
    say "starting slurmctld"
    /usr/sbin/slurmctld || { tail_log "$LOGS/slurmctld.log"; die "slurmctld failed to start"; }
fi
for _ in $(seq 1 "$WAIT_S"); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 1; done
scontrol ping 2>/dev/null | grep -q "is UP" || { tail_log "$LOGS/slurmctld.log"; die "slurmctld is not UP after ${WAIT_S}s"; }

# ---- slurmd ----------------------------------------------------------------------------------
if ! pid_alive "$STATE/slurmd.pid"; then
    say "starting slurmd"
    /usr/sbin/slurmd || { tail_log "$LOGS/slurmd.log"; die "slurmd failed to start"; }
fi
st=""
for _ in $(seq 1 "$WAIT_S"); do
    st="$(node_state || true)"
    [[ "$st" =~ ^(idle|mix|alloc)$ ]] && break
    if [[ "$st" =~ ^(down|drain|drng|fail)$ ]]; then   # e.g. left down by an earlier unclean stop
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 1
done
if ! [[ "$st" =~ ^(idle|mix|alloc)$ ]]; then
    sinfo -N -l >&2 || true
    tail_log "$LOGS/slurmctld.log"; tail_log "$LOGS/slurmd.log"
    die "node $HOST is '${st:-unknown}', not idle, after ${WAIT_S}s"
fi
say "SLURM is up: node $HOST is $st"
say "logs: $LOGS/slurmctld.log, $LOGS/slurmd.log (munge: /var/log/munge/munged.log)"
