#!/bin/sh
# Entrypoint of the nfhost image in the docker-compose demo (docker-compose.yml).
#
# The container sits on three Docker networks: `mgmt` (gRPC API, dashboard,
# /metrics), `clientnet` (the client's L2 segment) and `servernet` (the
# server's). Docker does not promise which of them becomes eth0, eth1 or eth2,
# so the two wire interfaces are found by the IPv4 subnet they carry. Each
# becomes an access port of the emulated NIC's wire:
#
#   clientnet interface  <->  wire VLAN $NFHOST_CLIENT_VLAN (100)
#   servernet interface  <->  wire VLAN $NFHOST_SERVER_VLAN (200)
#
# nfhost listens on 0.0.0.0 here (the published ports and the mgmt network), so it
# runs with --auth. On first start this script makes two random bearer tokens, one
# per admin principal, each in a file of the secrets directory (a named volume
# that the healthcheck, apply-chain and prometheus mount read-only):
#
#   ops.token         principal `ops`: nfctl (healthcheck, apply-chain, you) and
#                     the dashboard's sign-in
#   prometheus.token  principal `prometheus`: Prometheus's scrapes of /metrics
#
# and, at every start, the principals file nfhost reads (principals.toml: names
# and SHA-256 of the tokens, never the tokens). A token is made only where its
# file is missing: delete one and restart to replace it. Tokens are never printed;
# they never appear in a command line either (made by od into a file, hashed by
# sha256sum from the file).
#
# Arguments are appended to `nfhost serve`, so `command:` in the compose file
# can add flags (for example `--vfs 16`).
#
# Environment (the compose file sets the subnets; the rest has defaults):
#   NFHOST_CLIENT_SUBNET   IPv4 subnet of clientnet, e.g. 172.29.1.0/24 (required)
#   NFHOST_SERVER_SUBNET   IPv4 subnet of servernet, e.g. 172.29.2.0/24 (required)
#   NFHOST_CLIENT_VLAN     wire VLAN of the client side [100]
#   NFHOST_SERVER_VLAN     wire VLAN of the server side [200]
#   NFHOST_DATA_DIR        desired state (sled) [/var/lib/nfhost]
#   NFHOST_IFACE_WAIT_S    how long to wait for the interfaces to appear [15]
#   NFHOST_SECRETS_DIR     tokens and principals file [/run/nfhost-secrets]
#   NFHOST_PROMETHEUS_GID  group that may read prometheus.token: the Prometheus
#                          container's (nobody, 65534) [65534]; this process must
#                          be in it (compose: group_add), as it has no CAP_CHOWN
set -eu

log() { printf 'nfhost-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

: "${NFHOST_CLIENT_SUBNET:?set NFHOST_CLIENT_SUBNET to the IPv4 subnet of the client network (e.g. 172.29.1.0/24)}"
: "${NFHOST_SERVER_SUBNET:?set NFHOST_SERVER_SUBNET to the IPv4 subnet of the server network (e.g. 172.29.2.0/24)}"
client_vlan=${NFHOST_CLIENT_VLAN:-100}
server_vlan=${NFHOST_SERVER_VLAN:-200}
data_dir=${NFHOST_DATA_DIR:-/var/lib/nfhost}
wait_s=${NFHOST_IFACE_WAIT_S:-15}
secrets_dir=${NFHOST_SECRETS_DIR:-/run/nfhost-secrets}
prometheus_gid=${NFHOST_PROMETHEUS_GID:-65534}

command -v ip >/dev/null 2>&1 || die "ip (iproute2) is not installed in this image"
for tool in od tr sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool (coreutils) is not installed in this image"
done

# make_token FILE: 32 random bytes as 64 hex digits, in FILE (mode 0600, no newline),
# unless FILE already holds a token. Written beside it, then renamed: a crash
# leaves the old file or none, never half a token.
make_token() {
    if [ -s "$1" ]; then
        return 0
    fi
    rm -f "$1.new"
    (
        umask 077
        od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$1.new"
    ) || die "could not write $1.new"
    [ "$(wc -c <"$1.new")" -eq 64 ] || die "could not make a token in $1.new (od from /dev/urandom)"
    mv -f "$1.new" "$1"
    log "made a new token in $1 (not shown; read the file)"
}

# token_sha256 FILE: the hex SHA-256 of the token in FILE, as the principals file
# wants it (the file holds the token alone, without a newline).
token_sha256() {
    sum=$(sha256sum <"$1") || die "sha256sum of $1 failed"
    sum=${sum%% *}
    case $sum in
        *[!0-9a-f]*) die "sha256sum of $1 printed no hex digest" ;;
    esac
    [ "${#sum}" -eq 64 ] || die "sha256sum of $1 printed no SHA-256 digest"
    printf '%s\n' "$sum"
}

# The principals nfhost accepts: two admins. Rewritten at every start from the
# token files, so a token replaced by hand is honoured after a restart.
setup_auth() {
    mkdir -p "$secrets_dir"
    # Others need to reach the files (Prometheus runs as nobody); each file says who
    # may read it.
    chmod 0755 "$secrets_dir"
    make_token "$secrets_dir/ops.token"
    make_token "$secrets_dir/prometheus.token"
    chmod 0600 "$secrets_dir/ops.token"
    # Prometheus (uid and gid 65534 in its container) reads its token through the
    # group. Without CAP_CHOWN, the owner may give a file only to a group it is in.
    if chgrp "$prometheus_gid" "$secrets_dir/prometheus.token" 2>/dev/null; then
        chmod 0640 "$secrets_dir/prometheus.token"
    else
        chmod 0600 "$secrets_dir/prometheus.token"
        log "warning: could not give $secrets_dir/prometheus.token to group $prometheus_gid (is this container in that group? compose: group_add); Prometheus will not be able to read it and its scrapes will fail"
    fi
    ops_sha256=$(token_sha256 "$secrets_dir/ops.token")
    prometheus_sha256=$(token_sha256 "$secrets_dir/prometheus.token")
    principals=$secrets_dir/principals.toml
    (
        umask 077
        {
            echo "# Written by nfhost-entrypoint at each start from the token files beside it:"
            echo "# the SHA-256 of each token, never the token. Edits here are overwritten."
            echo
            echo "[[admin]]"
            echo 'name = "ops"'
            echo "token_sha256 = \"$ops_sha256\""
            echo
            echo "[[admin]]"
            echo 'name = "prometheus"'
            echo "token_sha256 = \"$prometheus_sha256\""
        } >"$principals.new"
    ) || die "could not write $principals.new"
    mv -f "$principals.new" "$principals"
    log "auth: principals ops and prometheus (admins) in $principals; tokens in $secrets_dir/ops.token and prometheus.token"
}

# Prints the name of the one interface holding an IPv4 address inside subnet $1.
# `ip -o addr show to PREFIX` selects addresses inside PREFIX; in its one-line
# output the interface name is field 2 (a veth may show as `eth1@if23`).
iface_in_subnet() {
    ip -o -4 addr show to "$1" | awk '{ sub(/@.*/, "", $2); print $2 }' | sort -u
}

# Compose connects every network before the process starts, but give the
# runtime a moment anyway rather than failing on a race.
find_iface() {
    subnet=$1 role=$2 waited=0
    while :; do
        found=$(iface_in_subnet "$subnet")
        count=$(printf '%s' "$found" | grep -c . || true)
        if [ "$count" -eq 1 ]; then
            printf '%s\n' "$found"
            return 0
        fi
        if [ "$count" -gt 1 ]; then
            die "more than one interface has an address in $subnet ($role network): $(printf '%s\n' "$found" | tr '\n' ' ')(the demo needs exactly one)"
        fi
        if [ "$waited" -ge "$wait_s" ]; then
            log "no interface has an IPv4 address in $subnet ($role network) after ${wait_s}s."
            log "the container's IPv4 addresses are:"
            ip -o -4 addr show | awk '{ print "    " $2 "  " $4 }' >&2
            die "is this container attached to the $role network, and does NFHOST_$(echo "$role" | tr '[:lower:]' '[:upper:]')_SUBNET match its ipam subnet in docker-compose.yml?"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

if_client=$(find_iface "$NFHOST_CLIENT_SUBNET" client)
if_server=$(find_iface "$NFHOST_SERVER_SUBNET" server)
[ "$if_client" != "$if_server" ] ||
    die "the client and server subnets are on the same interface ($if_client): they must be two networks"
log "client side: $if_client ($NFHOST_CLIENT_SUBNET) -> wire VLAN $client_vlan"
log "server side: $if_server ($NFHOST_SERVER_SUBNET) -> wire VLAN $server_vlan"

# AF_PACKET sees frames as the kernel holds them. nfhost handles neither GSO/GRO
# super-frames nor partial checksums, so every offload that produces them is
# turned off here (and on the client's and server's interfaces, see
# docker-compose.yml). Not every driver lets every feature change: warn, go on.
for ifname in "$if_client" "$if_server"; do
    if command -v ethtool >/dev/null 2>&1; then
        ethtool -K "$ifname" gro off tx off tso off gso off >/dev/null 2>&1 ||
            log "warning: could not turn off all offloads on $ifname (ethtool -K $ifname gro off tx off tso off gso off failed); large or unchecksummed frames may reach nfhost"
    else
        log "warning: ethtool is not installed; offloads on $ifname stay as they are"
    fi
    # Frames for the peer's MAC are flooded to this port by the Docker bridge
    # until it learns the MAC; promiscuous mode makes sure the socket gets them.
    ip link set dev "$ifname" promisc on ||
        log "warning: could not set $ifname promiscuous"
done

mkdir -p "$data_dir"
setup_auth

# 0.0.0.0: so --auth, always. The tokens cross the mgmt network in cleartext
# (no --tls-cert here): see docker/README.md.
exec nfhost serve \
    --grpc 0.0.0.0:50051 \
    --http 0.0.0.0:8080 \
    --auth "$secrets_dir/principals.toml" \
    --data-dir "$data_dir" \
    --wire "afpacket:${if_client}@${client_vlan},afpacket:${if_server}@${server_vlan}" \
    "$@"
