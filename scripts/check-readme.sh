#!/usr/bin/env bash
# Runs the README's two commands as written, so the README cannot drift from the
# code: the first (the demo) for a few seconds, checking that it shows traffic
# through the example chain; the second is what .ci/run runs, which this checks.
#
# NFHOST_README_SECONDS sets how long the demo runs (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "check-readme: $*" >&2; exit 1; }

# The first fenced block after "## Two commands", one command per line, comments cut.
block=$(awk '/^## Two commands/ { in_section = 1 }
             in_section && /^```/ { if (in_block) exit; in_block = 1; next }
             in_block' README.md)
first=$(sed -n 1p <<<"$block" | sed 's/[[:space:]]*#.*$//')
second=$(sed -n 2p <<<"$block" | sed 's/[[:space:]]*#.*$//')
[[ -n $first && -n $second ]] || fail "README.md has no two commands under '## Two commands'"
echo "check-readme: first command:  $first"
echo "check-readme: second command: $second"

grep -qxF "exec $second" .ci/run || fail ".ci/run does not run the README's second command ($second)"

# Build first, so the seconds below go to the demo and not to the compiler.
cargo build --release --locked -p nfhost

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Its own process group, so Ctrl-C reaches it as it would in a terminal.
setsid bash -c "$first" >"$out/stdout" 2>"$out/stderr" &
pid=$!
sleep "${NFHOST_README_SECONDS:-15}"
kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid"
# A person waits a few seconds for Ctrl-C to take; so does this.
if ! timeout 30 tail --pid="$pid" -f /dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    cat "$out/stdout" "$out/stderr" >&2
    fail "'$first' did not stop within 30 s of Ctrl-C"
fi
status=0
wait "$pid" || status=$?
if ((status != 0)); then
    cat "$out/stdout" "$out/stderr" >&2
    fail "'$first' exited with status $status after Ctrl-C"
fi

# Per-second rows: "t  VF  NF  rx-pps  tx-pps  copied  drops". Traffic means both
# NFs of the example chain received packets, and the wire got them back.
busy=$(awk '$3 == "mon" && $4 > 0 { mon = 1 } $3 == "fwd" && $4 > 0 { fwd = 1 }
            END { print (mon && fwd) ? "yes" : "no" }' "$out/stdout")
back=$(sed -n 's/^wire: \([0-9]*\) packets came back out.*/\1/p' "$out/stdout")
if [[ $busy != yes || -z $back || $back -eq 0 ]]; then
    cat "$out/stdout" "$out/stderr" >&2
    fail "'$first' showed no traffic through the example chain"
fi
tail -n 4 "$out/stdout"
echo "check-readme: '$first' showed traffic; $back packets came back out of the chain"
