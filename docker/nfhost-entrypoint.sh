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
set -eu

log() { printf 'nfhost-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

: "${NFHOST_CLIENT_SUBNET:?set NFHOST_CLIENT_SUBNET to the IPv4 subnet of the client network (e.g. 172.29.1.0/24)}"
: "${NFHOST_SERVER_SUBNET:?set NFHOST_SERVER_SUBNET to the IPv4 subnet of the server network (e.g. 172.29.2.0/24)}"
client_vlan=${NFHOST_CLIENT_VLAN:-100}
server_vlan=${NFHOST_SERVER_VLAN:-200}
data_dir=${NFHOST_DATA_DIR:-/var/lib/nfhost}
wait_s=${NFHOST_IFACE_WAIT_S:-15}

command -v ip >/dev/null 2>&1 || die "ip (iproute2) is not installed in this image"

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
            die "more than one interface has an address in $subnet ($role network): $(echo $found); the demo needs exactly one"
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

exec nfhost serve \
    --grpc 0.0.0.0:50051 \
    --http 0.0.0.0:8080 \
    --data-dir "$data_dir" \
    --wire "afpacket:${if_client}@${client_vlan},afpacket:${if_server}@${server_vlan}" \
    "$@"
