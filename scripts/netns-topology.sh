#!/usr/bin/env bash
# The real-traffic topology, in network namespaces on one machine (no containers):
#
#   PREFIX-client (10.77.0.1/24)                      PREFIX-server (10.77.0.2/24)
#        eth0                                               eth0
#         |  veth                                     veth  |
#      PREFIXc ── nfhost KIND:PREFIXc@100       KIND:PREFIXs@200 ── PREFIXs
#                     (access port, VLAN 100)   (access port, VLAN 200)
#
# KIND is afpacket or afxdp, as nfhost is started (the topology is the same).
# The client's frames enter nfhost's wire on VLAN 100 and reach the server on
# VLAN 200 only through a chain, and the replies the other way: there is no other
# path between the two namespaces. nfhost's access ports stand in for a
# VLAN-aware bridge (802.1Q access ports), which kernels without
# CONFIG_BRIDGE_VLAN_FILTERING cannot build.
#
# Usage:
#   netns-topology.sh up PREFIX        build it (fails if PREFIX's pieces exist)
#   netns-topology.sh bridge PREFIX    join PREFIXc and PREFIXs with a plain Linux
#                                      bridge PREFIXbr (the path without nfhost)
#   netns-topology.sh unbridge PREFIX  remove that bridge again
#   netns-topology.sh down PREFIX      remove everything PREFIX made, processes
#                                      in its namespaces included (idempotent)
#   netns-topology.sh check PREFIX     exit 1, listing them, if any pieces remain
#
# PREFIX: 1-8 lowercase letters and digits (interface names have 15 bytes).
# Needs root, iproute2 and ethtool.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1 p=$2
[[ $p =~ ^[a-z0-9]{1,8}$ ]] || { echo "error: PREFIX must be 1-8 lowercase letters and digits" >&2; exit 2; }

client=$p-client server=$p-server
c_link=${p}c s_link=${p}s br=${p}br

# TCP segmentation offload off on the hosts' interfaces: a packet socket
# (nfhost's afpacket: links) would get a 64 KiB TSO frame as the kernel holds it,
# and no NIC on a veth path splits it. (An afxdp: link needs nothing: while an XDP
# program sits on a veth the kernel turns segmentation offload off on its peer.)
# Checksum offload stays on: nfhost completes partial checksums.
tso_off() { # netns ifname
    ip netns exec "$1" ethtool -K "$2" tso off >/dev/null
}

no_ipv6() { # [netns] ifname: no router solicitations or MLD reports on the path
    if [[ $# -eq 2 ]]; then
        ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1" || true
    else
        sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" || true
    fi
}

case $cmd in
up)
    ip netns add "$client"
    ip netns add "$server"
    ip link add "$c_link" type veth peer name eth0 netns "$client"
    ip link add "$s_link" type veth peer name eth0 netns "$server"
    for ns in "$client" "$server"; do
        no_ipv6 "$ns" eth0
        tso_off "$ns" eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
    done
    ip -n "$client" addr add 10.77.0.1/24 dev eth0
    ip -n "$server" addr add 10.77.0.2/24 dev eth0
    for link in "$c_link" "$s_link"; do
        no_ipv6 "$link"
        ip link set "$link" up
    done
    ;;
bridge)
    ip link add "$br" type bridge
    no_ipv6 "$br"
    ip link set "$c_link" master "$br"
    ip link set "$s_link" master "$br"
    ip link set "$br" up
    ;;
unbridge)
    ip link del "$br"
    ;;
down)
    for ns in "$client" "$server"; do
        if ip netns list | grep -qw "^$ns"; then
            pids=$(ip netns pids "$ns" || true)
            [[ -n $pids ]] && kill $pids 2>/dev/null || true
            ip netns del "$ns"
        fi
    done
    for link in "$br" "$c_link" "$s_link"; do
        ip link show "$link" >/dev/null 2>&1 && ip link del "$link"
    done
    true
    ;;
check)
    left=$( (ip netns list | grep -E "^$p-(client|server)\b" || true; \
             ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$p(c|s|br)$" || true) )
    if [[ -n $left ]]; then
        echo "left behind by $p:" $left >&2
        exit 1
    fi
    ;;
*) usage ;;
esac
