#!/usr/bin/env bash
# Static checks of the docker-compose demo, for machines without a Docker engine
# (CI included): nothing is built or run, every file the demo needs is checked.
#
#   1. docker-compose.yml passes `docker-compose config -q` (Debian 12's Compose
#      v1.29, installed with apt when missing), and `docker compose config -q`
#      too where the Compose v2 plugin exists;
#   2. every COPY/ADD source of each Dockerfile the compose file builds exists in
#      its build context and is not excluded by that context's .dockerignore;
#   3. every host file or directory the compose file mounts, and the seccomp
#      profile it names, exists;
#   4. the seccomp profile is valid JSON and allows io_uring_setup,
#      io_uring_enter and io_uring_register without conditions;
#   5. the nfhost entrypoint is executable and parses (sh -n), and so do the
#      scripts written inline in the compose file (bash -n / sh -n);
#   6. examples/stick.toml is valid TOML with a name and at least one NF, and
#      the Prometheus scrape target is a compose service.
#
# Exits non-zero, naming each failure, if any check fails.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

COMPOSE_FILE=docker-compose.yml

# Debian 12's docker-compose package is Compose v1.29.2; it also brings PyYAML
# for /usr/bin/python3, which the checks below use.
if ! command -v docker-compose >/dev/null 2>&1; then
    log "installing docker-compose"
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: need root to install docker-compose (run as root or install it first: apt-get install docker-compose)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
fi

# A Python with PyYAML (and tomllib, 3.11+): the one docker-compose runs on first.
PY=
for candidate in /usr/bin/python3 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import yaml, tomllib' >/dev/null 2>&1; then
        PY=$candidate
        break
    fi
done
if [[ -z $PY ]]; then
    echo "error: no python3 with PyYAML and tomllib (3.11+) found; on Debian: apt-get install python3-yaml" >&2
    exit 1
fi

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

log "docker-compose config -q ($(docker-compose version --short 2>/dev/null || echo '?'))"
if docker-compose -f "$COMPOSE_FILE" config -q; then
    echo "ok: $COMPOSE_FILE is valid for docker-compose $(docker-compose version --short 2>/dev/null)"
else
    fail "docker-compose -f $COMPOSE_FILE config -q"
fi
if docker compose version >/dev/null 2>&1; then
    if docker compose -f "$COMPOSE_FILE" config -q; then
        echo "ok: $COMPOSE_FILE is valid for $(docker compose version)"
    else
        fail "docker compose -f $COMPOSE_FILE config -q"
    fi
else
    echo "note: no Compose v2 plugin here (docker compose); checked with v1 only"
fi

log "Dockerfiles, mounts, seccomp profile, inline scripts, chain file"
# Each problem is printed as one line starting with FAIL:, each pass with ok:.
if ! "$PY" - "$COMPOSE_FILE" <<'PYEOF'; then
import fnmatch
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

compose_path = sys.argv[1]
root = os.path.dirname(os.path.abspath(compose_path))
failed = []


def fail(msg):
    failed.append(msg)
    print(f"FAIL: {msg}", file=sys.stderr)


def ok(msg):
    print(f"ok: {msg}")


def interpolate(value):
    """Compose's ${VAR:-default} / ${VAR} / $$ for what this file uses."""
    def sub(m):
        name, default = m.group(1), m.group(3)
        return os.environ.get(name) or (default if default is not None else "")
    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-(.*?))?\}", sub, value)
    return value.replace("$$", "$")


with open(compose_path) as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}


# --- 2. Dockerfiles: COPY/ADD sources exist in the context, not .dockerignored.

def dockerignore_patterns(context):
    path = os.path.join(context, ".dockerignore")
    if not os.path.exists(path):
        return []
    pats = []
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("!"):
            pats.append(line.strip("/"))
    return pats


def pattern_regex(pat):
    # Docker's matching (moby/patternmatcher): filepath.Match per component,
    # `**` spanning any number of directories; a match on a directory excludes
    # everything below it.
    out = ""
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pat.startswith("**", i):
            out += ".*"
            i += 2
        else:
            c = pat[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    return re.compile(out + "(?:/.*)?$")


def ignored(rel, patterns):
    rel = os.path.normpath(rel)
    return [p for p in patterns if pattern_regex(p).match(rel)]


def instructions(dockerfile):
    """(instruction, args) with line continuations joined and comments dropped."""
    text = open(dockerfile).read()
    logical, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        logical.append(cur)
        cur = ""
    for line in logical:
        parts = line.split(None, 1)
        yield parts[0].upper(), parts[1] if len(parts) > 1 else ""


built = {}
for name, svc in services.items():
    build = svc.get("build")
    if not build:
        continue
    if isinstance(build, str):
        build = {"context": build}
    context = os.path.normpath(os.path.join(root, interpolate(build.get("context", "."))))
    dockerfile = os.path.join(context, interpolate(build.get("dockerfile", "Dockerfile")))
    built.setdefault((context, dockerfile), []).append(name)

for (context, dockerfile), names in sorted(built.items()):
    rel_df = os.path.relpath(dockerfile, root)
    if not os.path.isfile(dockerfile):
        fail(f"{rel_df} (built by {', '.join(names)}) does not exist")
        continue
    patterns = dockerignore_patterns(context)
    stages = set()
    count = 0
    for instr, args in instructions(dockerfile):
        if instr == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            if m:
                stages.add(m.group(1).lower())
            continue
        if instr not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.lstrip().startswith("[") else shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue  # from another stage or image, not the context
        if len(paths) < 2:
            fail(f"{rel_df}: {instr} {args}: needs a source and a destination")
            continue
        for src in paths[:-1]:
            if re.match(r"^[a-z]+://", src):
                continue  # ADD of a URL
            matches = glob.glob(os.path.join(context, src))
            where = os.path.relpath(os.path.join(context, src), root)
            if not matches:
                fail(f"{rel_df}: {instr} source {src!r} does not exist ({where})")
                continue
            hit = ignored(os.path.relpath(matches[0], context), patterns)
            if hit:
                fail(f"{rel_df}: {instr} source {src!r} is excluded by .dockerignore pattern(s) {hit}")
                continue
            count += 1
    ok(f"{rel_df}: {count} COPY/ADD source(s) exist in context {os.path.relpath(context, root) or '.'}/"
       f" (built by {', '.join(names)})")


# --- 3. Host paths the compose file mounts; the seccomp profile it names.

seccomp_files = set()
mounts = 0
for name, svc in services.items():
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            src = vol.get("source", "") if vol.get("type") == "bind" else ""
        else:
            src = interpolate(vol).split(":", 1)[0]
        if not src.startswith((".", "/", "~")):
            continue  # a named volume
        path = os.path.normpath(os.path.join(root, os.path.expanduser(src)))
        if os.path.exists(path):
            mounts += 1
        else:
            fail(f"service {name}: mounted host path {src} does not exist")
    for opt in svc.get("security_opt") or []:
        key, _, value = interpolate(opt).partition("=" if "=" in opt else ":")
        if key == "seccomp" and value != "unconfined":
            path = os.path.normpath(os.path.join(root, value))
            if os.path.isfile(path):
                seccomp_files.add(path)
            else:
                fail(f"service {name}: seccomp profile {value} does not exist")
ok(f"{mounts} mounted host path(s) exist")


# --- 4. The seccomp profile(s): JSON, io_uring allowed unconditionally.

IO_URING = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
if not seccomp_files:
    fail("no service names a seccomp profile file (security_opt: seccomp=FILE)")
for path in sorted(seccomp_files):
    rel = os.path.relpath(path, root)
    try:
        profile = json.load(open(path))
    except ValueError as e:
        fail(f"{rel} is not valid JSON: {e}")
        continue
    allowed = set()
    for rule in profile.get("syscalls", []):
        if (rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("args")
                and not rule.get("includes") and not rule.get("excludes")):
            allowed.update(rule.get("names", []))
    missing = IO_URING - allowed
    if profile.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL"):
        fail(f"{rel}: defaultAction is {profile.get('defaultAction')!r}, expected a deny-by-default profile")
    elif missing:
        fail(f"{rel}: does not allow {sorted(missing)} unconditionally")
    else:
        ok(f"{rel}: valid JSON, deny by default, allows {', '.join(sorted(IO_URING))}"
           f" ({len(allowed)} syscalls allowed unconditionally)")


# --- 5. Inline scripts in the compose file parse.

shells = {"bash": ["bash", "-n"], "/bin/bash": ["bash", "-n"], "sh": ["sh", "-n"], "/bin/sh": ["sh", "-n"]}
scripts = 0
for name, svc in services.items():
    argv = []
    for key in ("entrypoint", "command"):
        v = svc.get(key)
        if isinstance(v, list):
            argv += v
        elif isinstance(v, str):
            argv += shlex.split(v)
    if len(argv) >= 3 and argv[0] in shells and re.fullmatch(r"-[a-z]*c", argv[1]):
        script = argv[2].replace("$$", "$")
        r = subprocess.run(shells[argv[0]], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            fail(f"service {name}: inline {argv[0]} script does not parse: {r.stderr.strip()}")
        else:
            scripts += 1
ok(f"{scripts} inline script(s) parse")


# --- 6. The demo chain and the Prometheus target.

chain_path = os.path.join(root, "examples", "stick.toml")
try:
    chain = tomllib.load(open(chain_path, "rb"))
    nfs = chain.get("nf") or []
    if not chain.get("name") or not nfs:
        fail("examples/stick.toml: needs `name` and at least one [[nf]]")
    else:
        ok(f"examples/stick.toml: chain {chain['name']!r}: "
           + " -> ".join(f"{nf.get('name')} ({nf.get('kind')})" for nf in nfs))
except (OSError, tomllib.TOMLDecodeError) as e:
    fail(f"examples/stick.toml: {e}")

prom_path = os.path.join(root, "dashboards", "prometheus.yml")
try:
    prom = yaml.safe_load(open(prom_path))
    targets = [t for job in prom.get("scrape_configs", [])
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    bad = [t for t in targets if t.rsplit(":", 1)[0] not in services]
    if not targets or bad:
        fail(f"dashboards/prometheus.yml: scrape target(s) {bad or targets} are not compose services")
    else:
        ok(f"dashboards/prometheus.yml scrapes {', '.join(targets)} (compose service names)")
except (OSError, yaml.YAMLError) as e:
    fail(f"dashboards/prometheus.yml: {e}")

sys.exit(1 if failed else 0)
PYEOF
    failures=$((failures + 1))
fi

entrypoint=docker/nfhost-entrypoint.sh
if [[ ! -f $entrypoint ]]; then
    fail "$entrypoint does not exist"
elif [[ ! -x $entrypoint ]]; then
    fail "$entrypoint is not executable (chmod +x $entrypoint; git update-index --chmod=+x $entrypoint)"
elif ! sh -n "$entrypoint"; then
    fail "$entrypoint does not parse (sh -n)"
else
    echo "ok: $entrypoint is executable and parses"
fi
if command -v shellcheck >/dev/null 2>&1; then
    if shellcheck -s sh "$entrypoint"; then
        echo "ok: shellcheck $entrypoint"
    else
        fail "shellcheck $entrypoint"
    fi
fi

if ((failures)); then
    echo >&2
    echo "check-compose: $failures check group(s) failed (see FAIL lines above)" >&2
    exit 1
fi
echo
echo "check-compose: all checks passed"
