#!/usr/bin/env bash
# Local SLURM clusters for tests and local runs of the submitit launcher.
#
#   bash scripts/slurm_local.sh start              # single node: install (apt) + configure + start munged/slurmctld/slurmd
#   bash scripts/slurm_local.sh start --nodes 2    # a second, 2-node cluster: each node its own namespaces
#   bash scripts/slurm_local.sh env --nodes 2      # prints `export SLURM_CONF=...` for that cluster's clients
#   bash scripts/slurm_local.sh status [--nodes 2] # print sinfo; exit 0 when every node is usable
#   bash scripts/slurm_local.sh stop [--nodes 2]   # cancel all jobs, stop the daemons (packages stay installed)
#
# Targets Debian/Ubuntu containers without systemd and without a writable cgroup
# hierarchy: daemons are started directly, process tracking is proctrack/linuxproc,
# no task/cgroup plugin. Must run as root.
#
# The single-node cluster (the default) is the machine itself: node `hostname -s`, everything on
# 127.0.0.1, config in /etc/slurm. The multi-node cluster (--nodes N, N >= 2) is a separate
# cluster beside it, with its own config (/etc/slurm-nodes/slurm.conf: clients need
# SLURM_CONF, see `env`), ports, state and logs, so both can run at once. Debian's slurmd is
# built without --enable-multiple-slurmd, so a slurmd takes its node name from the hostname:
# each node is a network namespace (`ip netns`, its own address on a bridge of this machine,
# nothing routed off it) entered with new UTS and mount namespaces (its own hostname,
# kvnode1..N, and its own /etc/hosts, /etc/netns/<namespace>/hosts bind-mounted, naming every
# node and the controller, so node names resolve to node addresses as on a real cluster); that
# node's slurmd and every job step it starts run there. slurmctld runs on this machine,
# listening on the bridge address. Everything else (files, users, munge's socket) is shared.
#
# Exit codes: 0 ok, 1 failure, 2 usage, 77 this machine cannot host the cluster
# (not root, no apt-get to install the packages, no network namespaces) -- tests skip on 77.
#
# Environment knobs:
#   SLURM_LOCAL_TIMEOUT   seconds to wait for the nodes to become idle (default 60)
#   SLURM_LOCAL_PARTITION partition name (default debug)
#   SLURM_LOCAL_SUBNET    first three octets of the multi-node cluster's /24 (default 10.211.77):
#                         .1 is this machine (slurmctld) on the bridge, .11, .12, ... the nodes
set -euo pipefail

NODES=1
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
LOG_DIR=/var/log/slurm
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge
MUNGE_PID=$MUNGE_SOCKET_DIR/munged.pid
MUNGE_LOG=/var/log/munge/munged.log

# Both clusters' controller pid files: munged, which they share, stops with the last of them.
SINGLE_CTLD_PID=/run/slurmctld.pid
NODES_CTLD_PID=/run/slurmctld-nodes.pid
NODES_CONF_DIR=/etc/slurm-nodes
# Multi-node network: a bridge on this machine, one veth pair per node namespace.
SUBNET=${SLURM_LOCAL_SUBNET:-10.211.77}
BRIDGE=kvideo-br0
CTLD_ADDR=$SUBNET.1
NODE_PREFIX=kvnode

configure() {  # configure NODES: the paths, ports and names of that cluster
    if (( NODES == 1 )); then
        CONF_DIR=/etc/slurm
        CLUSTER=kvideo
        CTLD_PORT=6817
        SLURMD_PORT=6818
        CTLD_LOG=$LOG_DIR/slurmctld.log
        SLURMD_LOG=$LOG_DIR/slurmd.log
        JOBCOMP_LOG=$LOG_DIR/jobcomp.log
        STATE_DIR=/var/lib/slurm/slurmctld
        SPOOL_DIR=/var/spool/slurmd
        CTLD_PID=$SINGLE_CTLD_PID
        SLURMD_PID=/run/slurmd.pid
        NODE_NAMES=("$(hostname -s)")
    else
        CONF_DIR=$NODES_CONF_DIR
        CLUSTER=kvideo-nodes
        CTLD_PORT=6827
        SLURMD_PORT=6828
        CTLD_LOG=$LOG_DIR/nodes-slurmctld.log
        # slurmd replaces %n with its node name: one file per node.
        SLURMD_LOG=$LOG_DIR/nodes-slurmd-%n.log
        JOBCOMP_LOG=$LOG_DIR/nodes-jobcomp.log
        STATE_DIR=/var/lib/slurm/slurmctld-nodes
        SPOOL_DIR=/var/spool/slurmd-nodes/%n
        CTLD_PID=$NODES_CTLD_PID
        SLURMD_PID=/run/slurmd-nodes-%n.pid
        NODE_NAMES=()
        local i
        for i in $(seq 1 "$NODES"); do NODE_NAMES+=("$NODE_PREFIX$i"); done
    fi
    CONF=$CONF_DIR/slurm.conf
    CGROUP_CONF=$CONF_DIR/cgroup.conf
    # Every slurm command below talks to this cluster.
    export SLURM_CONF=$CONF
}

node_addr() { echo "$SUBNET.$(( 10 + ${1#"$NODE_PREFIX"} ))"; }  # node_addr kvnode2 -> SUBNET.12
node_netns() { echo "kvideo-$1"; }
slurmd_pid_file() { echo "${SLURMD_PID//%n/$1}"; }
slurmd_log_file() { echo "${SLURMD_LOG//%n/$1}"; }

log() { echo "[slurm_local] $*" >&2; }
skip() { echo "[slurm_local] cannot run here: $*" >&2; exit 77; }

dump_logs() {
    local f name logs=("$MUNGE_LOG" "$CTLD_LOG")
    for name in "${NODE_NAMES[@]}"; do logs+=("$(slurmd_log_file "$name")"); done
    for f in "${logs[@]}"; do
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
    local missing=0 b packages=(slurm-wlm munge)
    for b in munged slurmctld slurmd sinfo sbatch srun scontrol squeue scancel; do
        command -v "$b" >/dev/null 2>&1 || missing=1
    done
    # The multi-node cluster's namespaces, veths and bridge are made with iproute2's `ip`.
    if (( NODES > 1 )) && ! command -v ip >/dev/null 2>&1; then
        missing=1
        packages+=(iproute2)
    fi
    [[ $missing -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || skip "${packages[*]} are not installed and apt-get is not available"

    export DEBIAN_FRONTEND=noninteractive
    # Keep package postinst scripts from trying to start services (no init system here).
    local policy_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    # apt-get update only when the package index does not know the packages yet.
    if ! apt-cache show "${packages[@]}" >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -qq || { [[ $policy_created -eq 1 ]] && rm -f /usr/sbin/policy-rc.d; die "apt-get update failed"; }
    fi
    log "installing ${packages[*]} (apt-get)"
    local apt_opts=(-y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ! apt-get install "${apt_opts[@]}" "${packages[@]}" >/tmp/slurm_local_apt.log 2>&1; then
        log "apt-get install failed; retrying after apt-get update"
        apt-get update -qq || true
        if ! apt-get install "${apt_opts[@]}" "${packages[@]}" >/tmp/slurm_local_apt.log 2>&1; then
            tail -n 30 /tmp/slurm_local_apt.log >&2
            [[ $policy_created -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
            die "apt-get install ${packages[*]} failed (see /tmp/slurm_local_apt.log)"
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
    local host hw cpus mem defmem tmp kind ctld_addr nodes_lines="" name
    host=$(hostname -s)
    hw=$(node_line)
    cpus=$(echo "$hw" | tr ' ' '\n' | sed -n 's/^CPUs=//p')
    mem=$(echo "$hw" | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
    [[ -n $cpus && -n $mem ]] || die "could not parse CPUs/RealMemory from slurmd -C: $hw"
    defmem=$(( mem / cpus ))
    if (( NODES == 1 )); then
        kind="single-node local cluster"
        ctld_addr=127.0.0.1
        nodes_lines="NodeName=${host} NodeAddr=127.0.0.1 NodeHostname=${host} ${hw}State=UNKNOWN"
    else
        # Every node declares this whole machine's CPUs and memory: they share them.
        kind="${NODES}-node local cluster, one network + UTS namespace per node"
        ctld_addr=$CTLD_ADDR
        for name in "${NODE_NAMES[@]}"; do
            nodes_lines+="NodeName=${name} NodeAddr=$(node_addr "$name") NodeHostname=${name} ${hw}State=UNKNOWN"$'\n'
        done
        nodes_lines=${nodes_lines%$'\n'}
    fi
    install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$STATE_DIR" "${SPOOL_DIR%/%n}"
    tmp=$(mktemp)
    cat >"$tmp" <<SLURM_CONF
# Generated by scripts/slurm_local.sh -- ${kind}. Do not edit by hand.
ClusterName=${CLUSTER}
SlurmctldHost=${host}(${ctld_addr})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Job credential lifetime; it is also the delay before a requeued job may start again
# (default 120 s, far too long for a one-node test cluster).
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
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
${nodes_lines}
PartitionName=${PARTITION} Nodes=$(IFS=,; echo "${NODE_NAMES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
SLURM_CONF
    CONFIG_CHANGED=0
    if ! cmp -s "$tmp" "$CONF"; then
        install -m 0644 "$tmp" "$CONF"
        CONFIG_CHANGED=1
    fi
    cat >"$tmp" <<'CGROUP_CONF'
# Generated by scripts/slurm_local.sh. No cgroup plugin is used (proctrack/linuxproc, task/none);
# this file only exists so that tools looking for it find a harmless one.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CGROUP_CONF
    if ! cmp -s "$tmp" "$CGROUP_CONF"; then
        install -m 0644 "$tmp" "$CGROUP_CONF"
    fi
    rm -f "$tmp"
}

# ----------------------------------------------------------------------------- node namespaces
# Multi-node cluster only. This machine holds the bridge ($BRIDGE, $CTLD_ADDR/24, no route to
# or from anywhere else); node kvnodeK is the network namespace kvideo-kvnodeK holding one end
# of a veth pair (eth0, $SUBNET.(10+K)) whose other end (kv-kvnodeK) is on the bridge.
need_namespaces() {
    local err
    err=$(unshare --uts --net true 2>&1) \
        || skip "no network/UTS namespaces here (unshare --uts --net: ${err:-failed}); a multi-node cluster needs one per node"
}

write_node_hosts() {  # write_node_hosts NETNS: the /etc/hosts that namespace sees
    local ns=$1 name dir=/etc/netns/$1 tmp
    install -d -m 0755 "$dir"
    tmp=$(mktemp)
    {
        echo "# Generated by scripts/slurm_local.sh: /etc/hosts inside network namespace $ns."
        echo "127.0.0.1 localhost"
        echo "$CTLD_ADDR $(hostname -s)"
        for name in "${NODE_NAMES[@]}"; do echo "$(node_addr "$name") $name"; done
    } >"$tmp"
    cmp -s "$tmp" "$dir/hosts" || install -m 0644 "$tmp" "$dir/hosts"
    rm -f "$tmp"
}

setup_network() {
    local err name ns veth
    need_namespaces
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        err=$(ip link add "$BRIDGE" type bridge 2>&1) || skip "cannot create a bridge (ip link add $BRIDGE type bridge: $err)"
    fi
    ip addr replace "$CTLD_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for name in "${NODE_NAMES[@]}"; do
        ns=$(node_netns "$name")
        veth=kv-$name
        if [[ ! -e /run/netns/$ns ]]; then
            err=$(ip netns add "$ns" 2>&1) || skip "cannot create a network namespace (ip netns add $ns: $err)"
        fi
        if ! ip link show "$veth" >/dev/null 2>&1; then
            err=$(ip link add "$veth" type veth peer name eth0 netns "$ns" 2>&1) \
                || skip "cannot create a veth pair into $ns (ip link add type veth: $err)"
        fi
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr replace "$(node_addr "$name")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        write_node_hosts "$ns"
    done
}

teardown_network() {  # the node namespaces of a multi-node cluster of any size, then the bridge
    local ns
    for ns in /run/netns/kvideo-"$NODE_PREFIX"*; do
        [[ -e $ns ]] || continue
        ns=${ns##*/}
        ip netns del "$ns" 2>/dev/null || true
        ip link del "kv-${ns#kvideo-}" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

# ----------------------------------------------------------------------------- daemons
node_state() {  # node_state NAME
    sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n 1
}

stop_pid() {  # stop_pid PIDFILE: TERM, up to 10 s, then KILL
    local p _
    if pid_alive "$1"; then
        p=$(cat "$1")
        kill "$p" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
    fi
    rm -f "$1"
}

stop_daemons() {
    local f
    if (( NODES == 1 )); then
        stop_pid "$SLURMD_PID"
    else
        # Every node's slurmd, whatever node count the running cluster was started with.
        for f in "${SLURMD_PID%%%n*}"*"${SLURMD_PID##*%n}"; do
            [[ -e $f ]] && stop_pid "$f"
        done
    fi
    stop_pid "$CTLD_PID"
}

start_slurmd() {  # start_slurmd NAME
    local name=$1
    if (( NODES == 1 )); then
        slurmd -f "$CONF" || die "slurmd failed to start"
        return 0
    fi
    install -d -m 0755 "${SPOOL_DIR//%n/$name}"
    # Into the node's network namespace, then new UTS and mount namespaces: the hostname is the
    # node's name (slurmd finds its NodeName in it) and /etc/hosts is the node's. Not
    # `ip netns exec`, which also remounts /sys without /sys/fs/cgroup, where slurmd 22.05
    # fails to start ("No filesystem mounted on /sys/fs/cgroup"). Mounts stay slaves of this
    # machine's, so later mounts show inside too. slurmd daemonizes; the namespaces stay with
    # it and with every job step it starts.
    # shellcheck disable=SC2016  # $1..$3 are the inner shell's arguments
    nsenter --net="/run/netns/$(node_netns "$name")" unshare --uts --mount --propagation slave -- \
        sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd -f "$3"' \
        slurmd-node "/etc/netns/$(node_netns "$name")/hosts" "$name" "$CONF" \
        || die "slurmd for $name failed to start"
}

start_daemons() {
    local name running=0
    for name in "${NODE_NAMES[@]}"; do
        if pid_alive "$(slurmd_pid_file "$name")"; then running=1; fi
    done
    if [[ ${CONFIG_CHANGED:-0} -eq 1 ]] && { pid_alive "$CTLD_PID" || (( running )); }; then
        log "$CONF changed: restarting slurmctld/slurmd"
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
    for name in "${NODE_NAMES[@]}"; do
        if ! pid_alive "$(slurmd_pid_file "$name")"; then
            log "starting slurmd for node $name"
            start_slurmd "$name"
        fi
    done
}

node_usable() {  # node_usable STATE
    case $1 in
        idle|mixed|allocated|completing|"mixed-"|"allocated+") return 0 ;;
        *) return 1 ;;
    esac
}

wait_idle() {
    local name state deadline resumed=0 pending=()
    deadline=$(( SECONDS + TIMEOUT ))
    while (( SECONDS < deadline )); do
        pending=()
        for name in "${NODE_NAMES[@]}"; do
            state=$(node_state "$name")
            node_usable "$state" && continue
            pending+=("$name")
            case $state in
                *drain*|*down*|*fail*)
                    if pid_alive "$(slurmd_pid_file "$name")" && (( resumed < 5 )); then
                        log "node $name is '$state': scontrol update state=resume"
                        scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true
                        resumed=$(( resumed + 1 ))
                    fi ;;
            esac
            pid_alive "$(slurmd_pid_file "$name")" || die "slurmd of node $name exited"
        done
        (( ${#pending[@]} == 0 )) && return 0
        pid_alive "$CTLD_PID" || die "slurmctld exited"
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    for name in "${pending[@]}"; do scontrol show node "$name" >&2 || true; done
    die "nodes ${pending[*]} not idle after ${TIMEOUT}s"
}

cmd_start() {
    need_root
    local t0=$SECONDS
    install_packages
    if (( NODES > 1 )); then setup_network; fi
    start_munge
    write_config
    install_sacct_shim
    start_daemons
    wait_idle
    log "cluster up in $(( SECONDS - t0 ))s: partition '$PARTITION', nodes ${NODE_NAMES[*]} ($CONF)"
    sinfo
}

cmd_stop() {
    need_root
    if command -v scancel >/dev/null 2>&1 && [[ -f $CONF ]] && scontrol ping >/dev/null 2>&1; then
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
    if (( NODES > 1 )); then teardown_network; fi
    # munged serves both clusters: it stops with the last one.
    if pid_alive "$MUNGE_PID" && ! pid_alive "$SINGLE_CTLD_PID" && ! pid_alive "$NODES_CTLD_PID"; then
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
    local name state
    for name in "${NODE_NAMES[@]}"; do
        state=$(node_state "$name")
        node_usable "$state" || { echo "node $name state: '${state:-unknown}'" >&2; exit 1; }
    done
}

cmd_env() {  # for clients: eval "$(bash scripts/slurm_local.sh env --nodes 2)"
    echo "export SLURM_CONF=$CONF"
}

usage() {
    echo "usage: $0 start|stop|status|env [--nodes N]   (N: 1, the default, to 99)" >&2
    exit 2
}

command=${1:-}
[[ $# -gt 0 ]] && shift
while [[ $# -gt 0 ]]; do
    case $1 in
        --nodes) [[ $# -ge 2 ]] || usage; NODES=$2; shift 2 ;;
        --nodes=*) NODES=${1#--nodes=}; shift ;;
        *) usage ;;
    esac
done
[[ $NODES =~ ^[1-9][0-9]?$ ]] || usage
configure
case $command in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
esac
