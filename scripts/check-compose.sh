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
#      the Prometheus scrape target is a compose service;
#   7. authentication (nfhost listens on 0.0.0.0 in its container, so it runs
#      with --auth): the entrypoint passes --auth to `nfhost serve` (and not
#      --insecure); every nfctl the compose file runs (healthchecks, entrypoint +
#      command) has --token-file on a volume mounted in its container, the one
#      nfhost writes the tokens to, and talks to a loopback address (nfctl sends a
#      token over http:// only there); every Prometheus scrape job has
#      `authorization` with a credentials_file on a volume mounted into the
#      prometheus service, that same secrets volume;
#   8. dashboards/prometheus.yml passes `promtool check config --syntax-only`
#      (promtool comes with Debian's prometheus package, installed with apt when
#      missing; --syntax-only because the token file exists only in the
#      containers).
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
    prom = {}


# --- 7. Authentication: --auth, token files for nfctl and Prometheus.

def mounts_of(svc):
    """(source, target, read_only) of each volume of a service, short or long syntax."""
    out = []
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((vol.get("source", ""), vol.get("target", ""), bool(vol.get("read_only"))))
            continue
        parts = interpolate(vol).split(":")
        if len(parts) == 1:
            out.append(("", parts[0], False))
        else:
            opts = parts[2].split(",") if len(parts) > 2 else []
            out.append((parts[0], parts[1], "ro" in opts))
    return out


def named_volume_under(svc, path):
    """The named volume mounted in `svc` at a directory holding `path`, and its mount."""
    best = None
    for src, target, ro in mounts_of(svc):
        target = target.rstrip("/")
        if path.startswith(target + "/") and (best is None or len(target) > len(best[1])):
            best = (src, target, ro)
    if best is None or best[0].startswith((".", "/", "~")) or not best[0]:
        return None, best
    return best[0], best


# The entrypoint's `exec nfhost serve ...`, continuation lines joined.
entrypoint_path = os.path.join(root, "docker", "nfhost-entrypoint.sh")
serve_words = []
try:
    text = open(entrypoint_path).read().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if words[:3] == ["exec", "nfhost", "serve"]:
            serve_words = words[3:]
except OSError as e:
    fail(f"docker/nfhost-entrypoint.sh: {e}")
secrets_dir = None
if not serve_words:
    fail("docker/nfhost-entrypoint.sh: no `exec nfhost serve ...` line found")
elif "--auth" not in serve_words:
    fail("docker/nfhost-entrypoint.sh: `nfhost serve` runs without --auth, but listens on "
         + " ".join(w for w in serve_words if w.startswith("0.0.0.0")) + " (a non-loopback address)")
elif "--insecure" in serve_words:
    fail("docker/nfhost-entrypoint.sh: `nfhost serve` runs with --insecure")
else:
    auth_arg = serve_words[serve_words.index("--auth") + 1].strip('"')
    ok(f"docker/nfhost-entrypoint.sh: nfhost serve --auth {auth_arg}")
    # The directory of the principals file, e.g. "$secrets_dir" -> the default the
    # script gives NFHOST_SECRETS_DIR.
    m = re.search(r"secrets_dir=\$\{NFHOST_SECRETS_DIR:-([^}]+)\}", text)
    if m:
        secrets_dir = services.get("nfhost", {}).get("environment", {}).get("NFHOST_SECRETS_DIR") or m.group(1)
    else:
        fail("docker/nfhost-entrypoint.sh: no secrets_dir=${NFHOST_SECRETS_DIR:-...} default found")

nfhost_svc = services.get("nfhost") or {}
secrets_volume = None
if secrets_dir:
    secrets_volume, mount = named_volume_under(nfhost_svc, secrets_dir + "/x")
    if not secrets_volume or mount[1] != secrets_dir.rstrip("/"):
        fail(f"service nfhost: its secrets directory {secrets_dir} is not a named volume mounted there")
        secrets_volume = None
    elif mount[2]:
        fail(f"service nfhost: the secrets volume {secrets_volume} is mounted read-only; the entrypoint writes it")
    else:
        ok(f"service nfhost: tokens and principals in named volume {secrets_volume} at {secrets_dir}")


def argv_of(v):
    if isinstance(v, list):
        return [str(x) for x in v]
    if isinstance(v, str):
        return shlex.split(v)
    return []


def check_nfctl(where, svc_name, svc, argv):
    """One nfctl invocation: a token file on the secrets volume, a loopback server."""
    flags = {}
    for i, w in enumerate(argv[:-1]):
        if w.startswith("--"):
            flags.setdefault(w, argv[i + 1])
    for w in argv:
        if w.startswith("--") and "=" in w:
            k, _, v = w.partition("=")
            flags.setdefault(k, v)
    token_file = flags.get("--token-file")
    if not token_file:
        fail(f"{where}: nfctl without --token-file (nfhost runs with --auth): {' '.join(argv)}")
        return
    volume, mount = named_volume_under(svc, token_file)
    if not volume:
        fail(f"{where}: --token-file {token_file} is not on a named volume mounted in {svc_name}")
        return
    if secrets_volume and volume != secrets_volume:
        fail(f"{where}: --token-file {token_file} is on volume {volume}, not {secrets_volume}, where nfhost writes the tokens")
        return
    if secrets_dir and os.path.basename(token_file) not in ("ops.token", "prometheus.token"):
        fail(f"{where}: --token-file {token_file}: the entrypoint writes ops.token and prometheus.token only")
        return
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env if "=" in e)
    server = flags.get("--server") or env.get("NFHOST_SERVER") or "http://127.0.0.1:50051"
    host = re.sub(r"^[a-z]+://", "", server).rsplit(":", 1)[0].strip("[]")
    if server.startswith("http://") or "://" not in server:
        if not (host == "localhost" or host.startswith("127.") or host == "::1"):
            fail(f"{where}: nfctl --server {server}: nfctl sends a token over http:// only to a loopback address")
            return
        if svc_name != "nfhost" and svc.get("network_mode") != "service:nfhost":
            fail(f"{where}: nfctl --server {server} (loopback) from a container that is not in nfhost's"
                 " network namespace (network_mode: service:nfhost)")
            return
    ok(f"{where}: nfctl --token-file {token_file} (volume {volume}{', read-only' if mount[2] else ''}) --server {server}")


nfctl_runs = 0
for name, svc in services.items():
    hc = (svc.get("healthcheck") or {}).get("test")
    hc_argv = argv_of(hc)
    if hc_argv[:1] in (["CMD"], ["CMD-SHELL"]):
        if hc_argv[0] == "CMD-SHELL":
            hc_argv = shlex.split(" ".join(hc_argv[1:]))
        else:
            hc_argv = hc_argv[1:]
    runs = []
    if any(os.path.basename(w) == "nfctl" for w in hc_argv):
        runs.append((f"service {name} healthcheck", hc_argv))
    image = svc.get("image", "")
    if "entrypoint" in svc:
        run_argv = argv_of(svc.get("entrypoint")) + argv_of(svc.get("command"))
    else:
        # The nfhost image's own entrypoint (nfhost-entrypoint) runs no nfctl.
        run_argv = argv_of(svc.get("command")) if not image.startswith("nfhost:") else []
    if any(os.path.basename(w) == "nfctl" for w in run_argv):
        runs.append((f"service {name} entrypoint+command", run_argv))
    for where, argv in runs:
        nfctl_runs += 1
        # From the word nfctl on; an inline shell script is not parsed here.
        start = next(i for i, w in enumerate(argv) if os.path.basename(w) == "nfctl")
        if start > 0 and argv[0] in shells:
            fail(f"{where}: nfctl inside a shell script; this check reads only plain argv")
            continue
        check_nfctl(where, name, svc, argv[start:])
    # Whatever else mentions nfctl (an inline script, environment) is not checked:
    # say so rather than pass it silently.
    rest = yaml.safe_dump({k: v for k, v in svc.items() if k not in ("healthcheck", "entrypoint", "command")})
    if re.search(r"\bnfctl\b", rest):
        fail(f"service {name}: mentions nfctl outside healthcheck/entrypoint/command; check its token by hand and extend this check")
if nfctl_runs == 0:
    fail("no nfctl invocation found in the compose file (healthcheck, apply-chain): the checks above saw nothing")

prom_svc = services.get("prometheus")
jobs = prom.get("scrape_configs", []) if isinstance(prom, dict) else []
if not prom_svc:
    fail("no prometheus service in the compose file")
for job in jobs:
    name = job.get("job_name", "?")
    auth = job.get("authorization")
    if job.get("bearer_token_file") or job.get("bearer_token"):
        fail(f"dashboards/prometheus.yml: job {name}: use authorization.credentials_file, not bearer_token*")
    if not isinstance(auth, dict) or not auth.get("credentials_file"):
        fail(f"dashboards/prometheus.yml: job {name}: no authorization.credentials_file (nfhost's /metrics wants an admin token)")
        continue
    if auth.get("type", "Bearer") != "Bearer":
        fail(f"dashboards/prometheus.yml: job {name}: authorization type {auth.get('type')!r}, not Bearer")
        continue
    creds = auth["credentials_file"]
    if not creds.startswith("/"):
        fail(f"dashboards/prometheus.yml: job {name}: credentials_file {creds} is relative (to the config file's directory); use the absolute path in the container")
        continue
    if not prom_svc:
        continue
    volume, mount = named_volume_under(prom_svc, creds)
    if not volume:
        fail(f"dashboards/prometheus.yml: job {name}: credentials_file {creds} is not on a named volume mounted into the prometheus service")
    elif secrets_volume and volume != secrets_volume:
        fail(f"dashboards/prometheus.yml: job {name}: credentials_file {creds} is on volume {volume}, not {secrets_volume}, where nfhost writes the tokens")
    elif os.path.basename(creds) != "prometheus.token":
        fail(f"dashboards/prometheus.yml: job {name}: credentials_file {creds}: the entrypoint writes the prometheus principal's token to prometheus.token")
    else:
        ok(f"dashboards/prometheus.yml: job {name}: Bearer credentials_file {creds} (volume {volume}"
           f"{', read-only' if mount[2] else ''}, mounted into prometheus)")
if prom_svc:
    # prometheus.token is 0640 with group 65534: Prometheus must run in that group,
    # and nfhost's entrypoint must be in it to give the file to it.
    gid = str((services.get("nfhost", {}).get("environment") or {}).get("NFHOST_PROMETHEUS_GID", "65534"))
    user = str(prom_svc.get("user", ""))
    groups = [str(g) for g in nfhost_svc.get("group_add") or []]
    if user.partition(":")[2] != gid:
        fail(f"service prometheus: user {user!r}: its group must be {gid} (NFHOST_PROMETHEUS_GID), the group of prometheus.token")
    elif gid not in groups:
        fail(f"service nfhost: group_add {groups} lacks {gid}: the entrypoint cannot give prometheus.token to that group")
    else:
        ok(f"prometheus runs as {user}; nfhost is in group {gid} to give it prometheus.token")

sys.exit(1 if failed else 0)
PYEOF
    failures=$((failures + 1))
fi

log "promtool check config --syntax-only dashboards/prometheus.yml"
if ! command -v promtool >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]]; then
        log "installing prometheus (for promtool)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    fi
fi
if command -v promtool >/dev/null 2>&1; then
    # --syntax-only: the credentials_file (/run/nfhost-secrets/prometheus.token)
    # exists only inside the containers; check 7 above checks where it comes from.
    if promtool check config --syntax-only dashboards/prometheus.yml; then
        echo "ok: promtool $(promtool --version 2>&1 | awk 'NR == 1 { print $3 }') accepts dashboards/prometheus.yml"
    else
        fail "promtool check config --syntax-only dashboards/prometheus.yml"
    fi
else
    fail "promtool not found and not root to install it (apt-get install prometheus)"
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
