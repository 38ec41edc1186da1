#!/usr/bin/env bash
# Runs every nfhost test on a fresh Debian 12 machine.
#
# Installs what the tests need (with apt, only when missing), then runs the format
# and lint gates and the whole test suite. Used as-is by CI (.ci/run).
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# apt packages the test suite needs, as "command:package" pairs:
# promtool and prometheus for the metrics tests, chromium for the dashboard test,
# iperf3, ping, ethtool and ip for real traffic through chains (tests/real_traffic.rs,
# scripts/demo-netns.sh), docker-compose to validate docker-compose.yml, dpdk-testpmd
# (DPDK's own memif client, as an NF on an nfhost VF: tests/memif.rs).
APT_NEEDS=(promtool:prometheus prometheus:prometheus chromium:chromium node:nodejs npm:npm
    iperf3:iperf3 ping:iputils-ping ethtool:ethtool ip:iproute2 curl:curl
    docker-compose:docker-compose dpdk-testpmd:dpdk-dev)
# Packages with no command of their own: testpmd's memif driver.
PKG_NEEDS=(librte-net-memif23)

missing=()
for pair in "${APT_NEEDS[@]}"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
for pkg in "${PKG_NEEDS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: need root to install ${missing[*]} (run as root or install them first)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# DPDK loads its drivers from a directory of its own: without the memif one, testpmd
# would start with no port, and the memif tests would say only that it never attached.
memif_pmd=$(find /usr/lib -path '*dpdk/pmds-*' -name 'librte_net_memif.so*' -print -quit 2>/dev/null)
if ! command -v dpdk-testpmd >/dev/null 2>&1 || [[ -z $memif_pmd ]]; then
    echo "error: dpdk-testpmd or its memif driver is missing after install (apt-get install dpdk-dev librte-net-memif23)" >&2
    exit 1
fi

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo doc (rustdoc warnings, broken links included, are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

log "cargo test (whole workspace)"
cargo test --workspace --locked
# The figures of the real-traffic test (tests/real_traffic.rs), measured in that run.
cat test-output/real-traffic.txt test-output/real-traffic-memif.txt

# Every NF's packet path under libFuzzer, for a bounded time each. cargo-fuzz passes
# nightly-only flags to rustc; RUSTC_BOOTSTRAP lets the one stable toolchain here
# accept them (no nightly can be fetched). The NFs are safe Rust, so no sanitizer:
# what the fuzzer hunts is a panic.
log "fuzz: each NF's packet path (${FUZZ_SECONDS:=10} s each)"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
mkdir -p test-output
for target in firewall nat lb ratelimit monitor l2fwd; do
    fuzz_log="test-output/fuzz-$target.log"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 >"$fuzz_log" 2>&1; then
        tail -40 "$fuzz_log" >&2
        echo "error: fuzz target $target failed; the crashing input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "fuzz $target: $(grep -E '^Done' "$fuzz_log")"
done

# The README's two commands as written: the demo for a few seconds (it must show
# traffic), and .ci/run must be the second.
log "README: scripts/check-readme.sh"
scripts/check-readme.sh

# The netns demo end to end (real ping and iperf3 through a firewall chain), with
# the binaries the test step built, once with each kind of wire link; it checks
# it leaves nothing behind.
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/debug"
for wire in afxdp afpacket; do
    log "demo: WIRE=$wire scripts/demo-netns.sh"
    WIRE=$wire NFHOST_BIN="$bin_dir/nfhost" NFCTL_BIN="$bin_dir/nfctl" HTTP=127.0.0.1:18080 \
        scripts/demo-netns.sh
done

# The docker-compose demo, statically: compose file, Dockerfile paths, seccomp.
log "docker-compose demo: static checks"
scripts/check-compose.sh

# The dashboard in a real browser: headless Chromium driven by playwright-core
# against the real service (built by the cargo test step above).
log "browser test (headless Chromium)"
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    npm ci --prefix tests/browser --no-audit --no-fund
fi
NFHOST_BIN="$bin_dir/nfhost" NFCTL_BIN="$bin_dir/nfctl" node --test tests/browser/
