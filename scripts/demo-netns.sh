#!/usr/bin/env bash
# The real-traffic demo without Docker: a client and a server in network
# namespaces whose only path to each other is an nfhost chain (firewall → monitor,
# examples/stick.toml), with ping and iperf3 through it.
#
#   scripts/demo-netns.sh            run the checks, print what went through, clean up
#   scripts/demo-netns.sh --keep     the same, then keep everything running until
#                                    Ctrl-C (open the dashboard meanwhile)
#
# Environment: WIRE, the kind of nfhost's two wire links: afxdp (default: an
# AF_XDP socket and nfhost's XDP program on each veth) or afpacket (a packet
# socket); NFHOST_BIN, NFCTL_BIN (default: build target/release), HTTP (the
# dashboard address, default 127.0.0.1:8080), GRPC (default 127.0.0.1:50151).
# Needs root, iproute2, ethtool, iperf3 and ping (scripts/test.sh installs them).
# Along the way it re-applies the chain with one more firewall rule: the chain is
# updated in place, and the port that was denied connects. Leaves nothing behind: namespaces, links, processes and its state directory go
# on exit, whatever the exit.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[[ ${1:-} == --keep ]] && keep=true
prefix=nfdemo
wire_kind=${WIRE:-afxdp}
[[ $wire_kind == afxdp || $wire_kind == afpacket ]] || {
    echo "demo-netns: error: WIRE is afxdp or afpacket, not $wire_kind" >&2
    exit 2
}
http=${HTTP:-127.0.0.1:8080}
grpc=${GRPC:-127.0.0.1:50151}
client=$prefix-client server=$prefix-server

log() { printf '\n==> %s\n' "$*"; }
fail() { echo "demo-netns: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "needs root (network namespaces, AF_PACKET, AF_XDP and BPF)"
for tool in ip ethtool iperf3 ping; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install iproute2 ethtool iperf3 iputils-ping)"
done

if [[ -z ${NFHOST_BIN:-} ]]; then
    log "building nfhost (release)"
    cargo build --release --locked -p nfhost -p nfctl
    NFHOST_BIN=${CARGO_TARGET_DIR:-target}/release/nfhost
    NFCTL_BIN=${CARGO_TARGET_DIR:-target}/release/nfctl
fi
NFCTL_BIN=${NFCTL_BIN:-$(dirname "$NFHOST_BIN")/nfctl}
nfctl() { "$NFCTL_BIN" --server "http://$grpc" "$@"; }

state=$(mktemp -d /tmp/nfhost-demo.XXXXXX)
nfhost_pid=
cleanup() {
    status=$?
    if [[ -n $nfhost_pid ]]; then
        kill "$nfhost_pid" 2>/dev/null || true
        wait "$nfhost_pid" 2>/dev/null || true
    fi
    scripts/netns-topology.sh down "$prefix"
    rm -rf "$state"
    if ! scripts/netns-topology.sh check "$prefix"; then
        status=1
    fi
    if pgrep -f "nfhost serve --grpc $grpc" >/dev/null; then
        echo "demo-netns: error: an nfhost process outlived the demo" >&2
        status=1
    fi
    [[ $status -eq 0 ]] && log "cleaned up: no namespaces, links or processes left"
    exit $status
}
trap cleanup EXIT INT TERM

log "topology: $client (10.77.0.1) and $server (10.77.0.2), joined only through nfhost"
scripts/netns-topology.sh down "$prefix"
scripts/netns-topology.sh up "$prefix"

wire="$wire_kind:${prefix}c@100,$wire_kind:${prefix}s@200"
log "nfhost serve --wire $wire"
"$NFHOST_BIN" serve --grpc "$grpc" --http "$http" --data-dir "$state" --vfs 8 \
    --wire "$wire" >"$state/nfhost.log" 2>&1 &
nfhost_pid=$!
for _ in $(seq 100); do
    nfctl pf get >/dev/null 2>&1 && break
    kill -0 "$nfhost_pid" 2>/dev/null || { cat "$state/nfhost.log" >&2; fail "nfhost exited"; }
    sleep 0.1
done
nfctl pf get

log "before the chain: no path (ping must fail)"
if ip netns exec "$client" ping -c 2 -i 0.2 -W 1 10.77.0.2 >/dev/null 2>&1; then
    fail "ping went through without a chain"
fi
echo "ping: no reply, as it should be"

log "nfctl chain apply examples/stick.toml"
nfctl chain apply examples/stick.toml

log "ping through the chain"
ip netns exec "$client" ping -c 5 -i 0.2 -W 2 10.77.0.2

log "iperf3 TCP through the chain (5 s)"
ip netns exec "$server" iperf3 -s -D -p 5201 --pidfile "$state/iperf3.pid"
sleep 0.3
ip netns exec "$client" iperf3 -c 10.77.0.2 -p 5201 -t 5

log "TCP 8080 is denied by the firewall: no connection"
ip netns exec "$server" iperf3 -s -D -p 8080 --pidfile "$state/iperf3-8080.pid"
sleep 0.3
if ip netns exec "$client" timeout 5 iperf3 -c 10.77.0.2 -p 8080 -t 1 --connect-timeout 2000 >/dev/null 2>&1; then
    fail "a connection to TCP 8080 went through"
fi
echo "iperf3 -p 8080: no connection, as it should be"

log "reconfigure: allow TCP 8080 by re-applying the edited chain (the running firewall takes it)"
sed 's/^rules = \[$/rules = [\n  { action = "allow", proto = "tcp", src = "10.77.0.1\/32", dport = "8080" },/' \
    examples/stick.toml >"$state/stick-8080.toml"
grep -q 'dport = "8080"' "$state/stick-8080.toml" || fail "could not edit the chain file"
nfctl chain apply "$state/stick-8080.toml"
connected=false
for _ in $(seq 20); do
    if ip netns exec "$client" timeout 5 iperf3 -c 10.77.0.2 -p 8080 -t 1 --connect-timeout 1000 >/dev/null 2>&1; then
        connected=true
        break
    fi
    sleep 0.5
done
$connected || fail "TCP 8080 still gets no connection after the re-apply"
echo "iperf3 -p 8080: connected"
nfctl chain apply examples/stick.toml

log "what went through (nfctl stats, chain, monitor)"
sleep 1.2 # one sampling period of the counters
nfctl stats
nfctl chain get stick
nfctl nf get stick-mon
echo "monitor report (top talkers, per protocol):"
curl -fsS "http://$http/api/v1/nfs/stick-mon/report" && echo

if $keep; then
    log "running: dashboard http://$http/ , metrics http://$http/metrics (Ctrl-C ends and cleans up)"
    echo "try: ip netns exec $client ping 10.77.0.2"
    echo "     ip netns exec $client iperf3 -c 10.77.0.2 -t 30"
    wait "$nfhost_pid"
fi
log "demo finished"
