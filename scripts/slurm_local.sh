#!/usr/bin/env bash
# Single-node local SLURM cluster for tests and local runs of the submitit launcher.
#
#   bash scripts/slurm_local.sh start    # install (apt) + configure + start munged/slurmctld/slurmd
#   bash scripts/slurm_local.sh status   # print sinfo; exit 0 when the node is usable
#   bash scripts/slurm_local.sh stop     # cancel all jobs, stop the daemons (packages stay installed)
#
# Targets Debian/Ubuntu containers without systemd and without a writable cgroup
# hierarchy: daemons are started directly, process tracking is proctrack/linuxproc,
# no task/cgroup plugin. Must run as root.
#
# Exit codes: 0 ok, 1 failure, 2 usage, 77 this machine cannot host the cluster
# (not root, no apt-get to install the packages) -- tests skip on 77.
#
# Environment knobs:
#   SLURM_LOCAL_TIMEOUT   seconds to wait for the node to become idle (default 60)
#   SLURM_LOCAL_PARTITION partition name (default debug)
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
CGROUP_CONF=$CONF_DIR/cgroup.conf
LOG_DIR=/var/log/slurm
CTLD_LOG=$LOG_DIR/slurmctld.log
SLURMD_LOG=$LOG_DIR/slurmd.log
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/spool/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge
MUNGE_PID=$MUNGE_SOCKET_DIR/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}

log() { echo "[slurm_local] $*" >&2; }
skip() { echo "[slurm_local] cannot run here: $*" >&2; exit 77; }

dump_logs() {
    local f
    for f in "$MUNGE_LOG" "$CTLD_LOG" "$SLURMD_LOG"; do
        if [[ -f $f ]]; then
            echo "----- last lines of $f -----" >&2
            tail -n 30 "$f" >&2 || true
        fi
    done
}

die() {
    echo "[slurm_local] ERROR: $*" >&2
    dump_logs
    exit 1
}

pid_alive() {  # pid_alive PIDFILE
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

need_root() {
    [[ $(id -u) -eq 0 ]] || skip "must run as root (uid $(id -u)): it installs packages and starts munged/slurmctld/slurmd"
}

# ----------------------------------------------------------------------------- install
install_packages() {
    local missing=0 b
    for b in munged slurmctld slurmd sinfo sbatch srun scontrol squeue scancel; do
        command -v "$b" >/dev/null 2>&1 || missing=1
    done
    [[ $missing -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || skip "slurm/munge are not installed and apt-get is not available"

    export DEBIAN_FRONTEND=noninteractive
    # Keep package postinst scripts from trying to start services (no init system here).
    local policy_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    # apt-get update only when the package index does not know the packages yet.
    if ! apt-cache show slurm-wlm munge >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -qq || { [[ $policy_created -eq 1 ]] && rm -f /usr/sbin/policy-rc.d; die "apt-get update failed"; }
    fi
    log "installing slurm-wlm munge (apt-get)"
    local apt_opts=(-y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ! apt-get install "${apt_opts[@]}" slurm-wlm munge >/tmp/slurm_local_apt.log 2>&1; then
        log "apt-get install failed; retrying after apt-get update"
        apt-get update -qq || true
        if ! apt-get install "${apt_opts[@]}" slurm-wlm munge >/tmp/slurm_local_apt.log 2>&1; then
            tail -n 30 /tmp/slurm_local_apt.log >&2
            [[ $policy_created -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
            die "apt-get install slurm-wlm munge failed (see /tmp/slurm_local_apt.log)"
        fi
    fi
    [[ $policy_created -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    for b in munged slurmctld slurmd sinfo sbatch srun; do
        command -v "$b" >/dev/null 2>&1 || die "$b still missing after apt-get install"
    done
}

# ----------------------------------------------------------------------------- munge
munge_works() {
    command -v munge >/dev/null 2>&1 && command -v unmunge >/dev/null 2>&1 \
        && munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

start_munge() {
    local owner=root
    id munge >/dev/null 2>&1 && owner=munge
    install -d -m 0700 -o "$owner" -g "$owner" /etc/munge
    install -d -m 0711 -o "$owner" -g "$owner" /var/lib/munge
    install -d -m 0700 -o "$owner" -g "$owner" /var/log/munge
    install -d -m 0755 -o "$owner" -g "$owner" "$MUNGE_SOCKET_DIR"
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key $MUNGE_KEY"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown "$owner:$owner" "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"

    if pid_alive "$MUNGE_PID" && munge_works; then
        return 0
    fi
    # Stale pid/socket from a previous container life.
    rm -f "$MUNGE_PID" "$MUNGE_SOCKET_DIR"/munge.socket.2*
    log "starting munged"
    if [[ $owner == munge ]] && command -v runuser >/dev/null 2>&1; then
        runuser -u munge -- munged 2>>/tmp/slurm_local_munged.err || true
        sleep 0.5
    fi
    if ! munge_works; then
        # Fallback for containers where munged cannot run as the munge user: run it as root.
        if [[ -s $MUNGE_PID ]]; then kill "$(cat "$MUNGE_PID")" 2>/dev/null || true; fi
        rm -f "$MUNGE_PID" "$MUNGE_SOCKET_DIR"/munge.socket.2*
        chown -R root:root /etc/munge /var/lib/munge /var/log/munge "$MUNGE_SOCKET_DIR"
        munged --force 2>>/tmp/slurm_local_munged.err || true
    fi
    local _
    for _ in $(seq 1 50); do
        munge_works && return 0
        sleep 0.2
    done
    cat /tmp/slurm_local_munged.err >&2 2>/dev/null || true
    die "munged did not start (munge -n | unmunge fails)"
}

# ----------------------------------------------------------------------------- sacct shim
# Without slurmdbd, plain `sacct` fails ("Slurm accounting storage is disabled"). submitit polls
# `sacct -o JobID,State,NodeList --parsable2 -j ID...`; when that fails it only notices a job's end
# through its result pickle, so a job that dies without writing one (OOM, scancel, node failure)
# makes job.result() wait forever. The shim answers from slurmctld (squeue -t all: jobs younger
# than MinJobAge, live state included) and from the jobcomp/filetxt log (`sacct --completion`).
SACCT_SHIM=/usr/local/bin/sacct
install_sacct_shim() {
    local real tmp
    real=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v sacct) || return 0
    tmp=$(mktemp)
    cat >"$tmp" <<SHIM_HEAD
#!/bin/bash
# Installed by kvideo scripts/slurm_local.sh: sacct for a cluster without slurmdbd.
# Passes through to $real unless slurm.conf has AccountingStorageType=accounting_storage/none and
# JobCompType=jobcomp/filetxt; then it reads the job completion log (sacct --completion) and, for
# --parsable2 queries of JobID/JobName/State/NodeList/Partition with -j, adds the state slurmctld
# knows (squeue -t all), printed last so that it wins for readers keeping the last line per job.
REAL=$real
SHIM_HEAD
    cat >>"$tmp" <<'SHIM_BODY'
conf=${SLURM_CONF:-/etc/slurm/slurm.conf}
if ! grep -qiE '^[[:space:]]*AccountingStorageType[[:space:]]*=[[:space:]]*accounting_storage/none' "$conf" 2>/dev/null \
    || ! grep -qiE '^[[:space:]]*JobCompType[[:space:]]*=[[:space:]]*jobcomp/filetxt' "$conf" 2>/dev/null; then
    exec "$REAL" "$@"
fi
fmt="" parsable2=0 jobs=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    a=${args[i]}
    case $a in
        -c|--completion) exec "$REAL" "$@" ;;
        -o|--format) fmt=${args[i+1]:-} ;;
        --format=*) fmt=${a#--format=} ;;
        -P|--parsable2) parsable2=1 ;;
        -j|--jobs) jobs+=("${args[i+1]:-}") ;;
        --jobs=*) jobs+=("${a#--jobs=}") ;;
    esac
done
out=$("$REAL" --completion "$@") || exit $?
printf '%s\n' "$out"
[[ $parsable2 -eq 1 && -n $fmt && ${#jobs[@]} -gt 0 ]] || exit 0
sq=""
IFS=, read -ra fields <<<"$fmt"
for f in "${fields[@]}"; do
    case ${f,,} in
        jobid) sq+="%i|" ;;
        jobname) sq+="%j|" ;;
        state) sq+="%T|" ;;
        nodelist) sq+="%N|" ;;
        partition) sq+="%P|" ;;
        *) exit 0 ;;
    esac
done
want=" $(IFS=,; echo "${jobs[*]}" | tr ',' ' ') "
squeue -h -t all -o "${sq%|}" 2>/dev/null | while IFS= read -r line; do
    id=${line%%|*}
    if [[ $want == *" ${id%%_*} "* || $want == *" $id "* ]]; then
        printf '%s\n' "$line"
    fi
done
exit 0
SHIM_BODY
    if ! cmp -s "$tmp" "$SACCT_SHIM"; then
        install -m 0755 "$tmp" "$SACCT_SHIM"
    fi
    rm -f "$tmp"
}

# ----------------------------------------------------------------------------- config
node_line() {
    # `slurmd -C` prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
    # ThreadsPerCore=1 RealMemory=24032" followed by "UpTime=...". Keep the hardware fields.
    local hw
    hw=$(slurmd -C 2>/dev/null | head -n 1) || true
    [[ $hw == NodeName=* ]] || die "slurmd -C did not report the node hardware: '$hw'"
    # Drop NodeName (we set it ourselves) and anything not hardware.
    echo "$hw" | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' '
}

write_config() {  # sets CONFIG_CHANGED=1 when slurm.conf/cgroup.conf changed
    local host hw cpus mem defmem tmp
    host=$(hostname -s)
    hw=$(node_line)
    cpus=$(echo "$hw" | tr ' ' '\n' | sed -n 's/^CPUs=//p')
    mem=$(echo "$hw" | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
    [[ -n $cpus && -n $mem ]] || die "could not parse CPUs/RealMemory from slurmd -C: $hw"
    defmem=$(( mem / cpus ))
    install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Generated by scripts/slurm_local.sh -- single-node local cluster. Do not edit by hand.
ClusterName=kvideo
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Job credential lifetime; it is also the delay before a requeued job may start again
# (default 120 s, far too long for a one-node test cluster).
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${CTLD_LOG}
SlurmdLogFile=${SLURMD_LOG}
SlurmctldDebug=info
SlurmdDebug=info
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
# No cgroups: containers usually lack a writable cgroup hierarchy.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# Scheduling.
SchedulerType=sched/backfill
# Re-test pending jobs often (defaults 60 s/30 s) so requeued jobs restart quickly.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${defmem}
ReturnToService=2
JobRequeue=1
PreemptMode=OFF
KillWait=10
MinJobAge=600
InactiveLimit=0
Waittime=0
SlurmctldTimeout=120
SlurmdTimeout=300
# No slurmdbd: no accounting storage; completed jobs are appended to a text file.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP_LOG}
# Node and partition.
NodeName=${host} NodeAddr=127.0.0.1 NodeHostname=${host} ${hw}State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    CONFIG_CHANGED=0
    if ! cmp -s "$tmp" "$CONF"; then
        install -m 0644 "$tmp" "$CONF"
        CONFIG_CHANGED=1
    fi
    cat >"$tmp" <<'EOF'
# Generated by scripts/slurm_local.sh. No cgroup plugin is used (proctrack/linuxproc, task/none);
# this file only exists so that tools looking for it find a harmless one.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
    if ! cmp -s "$tmp" "$CGROUP_CONF"; then
        install -m 0644 "$tmp" "$CGROUP_CONF"
    fi
    rm -f "$tmp"
}

# ----------------------------------------------------------------------------- daemons
node_state() {
    sinfo -h -N -n "$(hostname -s)" -o %T 2>/dev/null | head -n 1
}

stop_daemons() {
    local f p _
    for f in "$SLURMD_PID" "$CTLD_PID"; do
        if pid_alive "$f"; then
            p=$(cat "$f")
            kill "$p" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$p" 2>/dev/null || break
                sleep 0.2
            done
            if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
        fi
        rm -f "$f"
    done
}

start_daemons() {
    if [[ ${CONFIG_CHANGED:-0} -eq 1 ]] && { pid_alive "$CTLD_PID" || pid_alive "$SLURMD_PID"; }; then
        log "slurm.conf changed: restarting slurmctld/slurmd"
        stop_daemons
    fi
    if ! pid_alive "$CTLD_PID"; then
        log "starting slurmctld"
        slurmctld -f "$CONF" || die "slurmctld failed to start"
    fi
    local _
    for _ in $(seq 1 $(( TIMEOUT * 5 ))); do
        scontrol ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer 'scontrol ping'"
    if ! pid_alive "$SLURMD_PID"; then
        log "starting slurmd"
        slurmd -f "$CONF" || die "slurmd failed to start"
    fi
}

wait_idle() {
    local host state deadline resumed=0
    host=$(hostname -s)
    deadline=$(( SECONDS + TIMEOUT ))
    while (( SECONDS < deadline )); do
        state=$(node_state)
        case $state in
            idle|mixed|allocated|completing|"mixed-"|"allocated+")
                return 0 ;;
            *drain*|*down*|*fail*)
                if pid_alive "$SLURMD_PID" && (( resumed < 5 )); then
                    log "node $host is '$state': scontrol update state=resume"
                    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
                    resumed=$(( resumed + 1 ))
                fi ;;
        esac
        pid_alive "$SLURMD_PID" || die "slurmd exited"
        pid_alive "$CTLD_PID" || die "slurmctld exited"
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    scontrol show node "$host" >&2 || true
    die "node $host not idle after ${TIMEOUT}s (state '${state:-?}')"
}

cmd_start() {
    need_root
    local t0=$SECONDS
    install_packages
    start_munge
    write_config
    install_sacct_shim
    start_daemons
    wait_idle
    log "cluster up in $(( SECONDS - t0 ))s: partition '$PARTITION', node $(hostname -s) is $(node_state)"
    sinfo
}

cmd_stop() {
    need_root
    if command -v scancel >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            local _
            for _ in $(seq 1 30); do
                [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemons
    if pid_alive "$MUNGE_PID"; then
        kill "$(cat "$MUNGE_PID")" 2>/dev/null || true
    fi
    log "stopped"
}

cmd_status() {
    if ! command -v sinfo >/dev/null 2>&1; then
        echo "slurm is not installed" >&2
        exit 1
    fi
    sinfo || exit 1
    local state
    state=$(node_state)
    case $state in
        idle|mixed|allocated|completing|mixed-|allocated+) exit 0 ;;
        *) echo "node state: '${state:-unknown}'" >&2; exit 1 ;;
    esac
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
