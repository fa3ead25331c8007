#!/usr/bin/env bash
# The scale-out topology on loopback: three NATS JetStream nodes (one cluster, stream HL7 with
# three replicas), three `mllp serve --store nats://…`, and haproxy in front of them.
# docs/scale-out.md explains it. Not part of CI.
#
#   run.sh up      build, start everything, print the addresses
#   run.sh check   20 000 messages through haproxy; kills receiver r2 and NATS node n3 mid-run;
#                  verifies every acknowledged MSH-10 is in the stream exactly once
#   run.sh down    stop everything
#
#   MESSAGES=20000 CONNECTIONS=16 run.sh check
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="$root/target/scale-out"
bin="$root/target/release/mllp"
check_bin="$root/target/release/examples/scale_out_check"
servers="nats://127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224"

say() { printf '%s\n' "$*" >&2; }

# Waits until `cmd` succeeds, at most `tries` × 0.2 s.
wait_for() {
    local tries=$1; shift
    for _ in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

start_nats() {
    local n=$1
    sed "s|@STATE@|$state|g" "$here/nats-$n.conf" >"$state/nats-$n.conf"
    "$nats" -c "$state/nats-$n.conf" >/dev/null 2>&1 &
    echo $! >"$state/nats-$n.pid"
}

start_serve() {
    local n=$1 port=$((2575 + $1))
    : >"$state/serve-$n.out"
    "$bin" serve --bind "127.0.0.1:$port" --store "$servers/HL7" \
        --create-stream --stream-replicas 3 --max-message-size 1MiB \
        --idle-timeout none --log-format json \
        >"$state/serve-$n.out" 2>"$state/serve-$n.log" &
    echo $! >"$state/serve-$n.pid"
    wait_for 100 grep -q "listening on" "$state/serve-$n.out"
}

up() {
    mkdir -p "$state"
    say "building mllp and the check (release)"
    (cd "$root" && cargo build --release --bin mllp --example scale_out_check >&2)
    nats="$("$root/.ci/nats-server")"
    if ! command -v haproxy >/dev/null; then
        say "installing haproxy (apt)"
        apt-get install -y haproxy >&2 || { apt-get update >&2 && apt-get install -y haproxy >&2; }
    fi
    for n in 1 2 3; do start_nats "$n"; done
    for n in 1 2 3; do
        wait_for 100 curl -sf "http://127.0.0.1:$((8221 + n))/healthz?js-enabled-only=true" \
            || { say "NATS node $n did not start: see $state/nats-$n.log"; exit 1; }
    done
    # The first receiver creates the stream; the cluster may still be electing its leader.
    for _ in $(seq 25); do
        if start_serve 1; then break; fi
        sleep 0.4
    done
    grep -q "listening on" "$state/serve-1.out" \
        || { say "receiver 1 did not start: see $state/serve-1.log"; exit 1; }
    start_serve 2
    start_serve 3
    haproxy -f "$here/haproxy.cfg" -db >"$state/haproxy.log" 2>&1 &
    echo $! >"$state/haproxy.pid"
    wait_for 50 bash -c "exec 3<>/dev/tcp/127.0.0.1/2575"
    say "NATS: $servers (stream HL7, R3); receivers 127.0.0.1:2576-2578; haproxy 127.0.0.1:2575"
}

kill_one() {
    local pid_file="$state/$1.pid"
    [[ -f $pid_file ]] && kill -KILL "$(cat "$pid_file")" 2>/dev/null || true
    rm -f "$pid_file"
}

down() {
    for p in haproxy serve-1 serve-2 serve-3; do
        [[ -f "$state/$p.pid" ]] && kill -TERM "$(cat "$state/$p.pid")" 2>/dev/null || true
        rm -f "$state/$p.pid"
    done
    for n in 1 2 3; do kill_one "nats-$n"; done
    say "stopped; state kept in $state"
}

check() {
    local messages=${MESSAGES:-20000} connections=${CONNECTIONS:-16}
    local progress="$state/check.progress"
    : >"$progress"
    "$check_bin" --to 127.0.0.1:2575 --nats "$servers" --stream HL7 \
        --messages "$messages" --connections "$connections" 2>"$progress" &
    local check_pid=$!
    # Kill a receiver at a quarter of the run, a NATS node at half of it.
    wait_for 600 grep -q "acknowledged $((messages / 4))" "$progress" || true
    say "killing receiver r2 (SIGKILL)"
    kill_one serve-2
    wait_for 600 grep -q "acknowledged $((messages / 2))" "$progress" || true
    say "killing NATS node n3 (SIGKILL)"
    kill_one nats-3
    local status=0
    wait "$check_pid" || status=$?
    grep -v '^progress' "$progress" >&2 || true
    return "$status"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    check) check ;;
    *) say "usage: $0 up|check|down"; exit 2 ;;
esac
