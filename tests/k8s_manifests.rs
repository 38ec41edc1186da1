//! Static checks of the Kubernetes manifests in `deploy/kubernetes/`: nothing is
//! applied to a cluster. Every YAML document parses and names itself; the
//! DaemonSet's `nfhost serve` flags agree with its volumes (each directory nfhost
//! hands the kubelet or uses is a hostPath mounted at that same path, since the
//! kubelet mounts host paths into pods), with its probes and with the example
//! NF pod (the resource it asks for, the variables it reads); and every flag it
//! passes is one `nfhost serve --help` lists.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const DAEMONSET_FILE: &str = "deploy/kubernetes/nfhost-daemonset.yaml";
const POD_FILE: &str = "deploy/kubernetes/example-nf-pod.yaml";
/// Where nfhost finds the kubelet's PodResources socket: the directory beside
/// `--kubelet-dir` (`/var/lib/kubelet/device-plugins`).
const POD_RESOURCES_DIR: &str = "/var/lib/kubelet/pod-resources";
/// Where the device plugin mounts a VF's endpoint directory in a pod.
const POD_ENDPOINT_DIR: &str = "/run/nfhost";
/// The variables an NF must read from the device plugin (Allocate).
const POD_MUST_USE: [&str; 2] = ["NFHOST_VF_MEMIF_SOCKET", "NFHOST_VF_SECRET"];

/// Every YAML document of `rel` (relative to the package root), as JSON values.
fn documents(rel: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel}: document {} is not valid YAML: {e}", i + 1))
        })
        .collect();
    assert!(!docs.is_empty(), "{rel}: no YAML document in it");
    docs
}

/// `Kind namespace/name` of a document, for messages.
fn describe(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or("?");
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Panics with every problem found, one a line, if there is any.
fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// The one document of `kind` in `rel`.
fn the_one(rel: &str, kind: &str) -> Value {
    let mut found: Vec<Value> = documents(rel)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{rel}: expected exactly one {kind}, found {}",
        found.len()
    );
    found.remove(0)
}

/// A container's `command` followed by its `args`, each item a string (the API
/// server refuses anything else, e.g. an unquoted number).
fn argv(container: &Value, problems: &mut Vec<String>) -> Vec<String> {
    let name = container["name"].as_str().unwrap_or("?");
    let mut out = Vec::new();
    for field in ["command", "args"] {
        match &container[field] {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    match item.as_str() {
                        Some(s) => out.push(s.to_owned()),
                        None => problems.push(format!(
                            "container {name}: {field} item {item} is not a string (quote it)"
                        )),
                    }
                }
            }
            other => problems.push(format!("container {name}: {field} is not a list: {other}")),
        }
    }
    out
}

/// The DaemonSet, its pod spec, its `nfhost serve` container and the arguments
/// after `serve`.
struct Nfhost {
    daemonset: Value,
    container: Value,
    serve_args: Vec<String>,
}

impl std::fmt::Debug for Nfhost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nfhost")
            .field("daemonset", &describe(&self.daemonset))
            .field("serve_args", &self.serve_args)
            .finish()
    }
}

impl Nfhost {
    fn load() -> Nfhost {
        let daemonset = the_one(DAEMONSET_FILE, "DaemonSet");
        let containers = daemonset["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut problems = Vec::new();
        let mut found = Vec::new();
        for c in containers {
            let argv = argv(&c, &mut problems);
            // The command must be nfhost itself: the image's ENTRYPOINT is the
            // docker-compose demo's script.
            let runs_nfhost = argv
                .first()
                .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "nfhost"));
            if let (true, Some(i)) = (runs_nfhost, argv.iter().position(|a| a == "serve")) {
                found.push((c.clone(), argv[i + 1..].to_vec()));
            }
        }
        report(DAEMONSET_FILE, &problems);
        assert_eq!(
            found.len(),
            1,
            "{DAEMONSET_FILE}: expected one container whose command is `nfhost` and whose \
             arguments are `serve ...` (the image's ENTRYPOINT is the compose demo's script, \
             so `command: [nfhost]` must be given); found {}",
            found.len()
        );
        let (container, serve_args) = found.remove(0);
        Nfhost {
            daemonset,
            container,
            serve_args,
        }
    }

    fn pod_spec(&self) -> &Value {
        &self.daemonset["spec"]["template"]["spec"]
    }

    /// The one value of `--flag`, given as `--flag VALUE` or `--flag=VALUE`.
    fn flag(&self, flag: &str) -> Result<String, String> {
        let mut values = Vec::new();
        let mut args = self.serve_args.iter();
        while let Some(arg) = args.next() {
            if arg == flag {
                match args.next() {
                    Some(v) if !v.starts_with("--") => values.push(v.clone()),
                    _ => return Err(format!("{flag} is given without a value")),
                }
            } else if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                values.push(v.to_owned());
            }
        }
        match values.len() {
            1 => Ok(values.remove(0)),
            0 => Err(format!(
                "the DaemonSet does not pass {flag} to nfhost serve (its arguments: {:?})",
                self.serve_args
            )),
            n => Err(format!("{flag} is given {n} times: {values:?}")),
        }
    }

    /// The volumeMount of the nfhost container at `path` and the volume it
    /// mounts, which must be a hostPath of that same path. `why` says which
    /// flag or file wants it, for the messages.
    fn host_mount(&self, path: &str, why: &str) -> Result<Value, String> {
        let container = self.container["name"].as_str().unwrap_or("?");
        let mounts = self.container["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let at: Vec<&Value> = mounts
            .iter()
            .filter(|m| m["mountPath"].as_str().map(normal) == Some(normal(path)))
            .collect();
        let mount = match at.as_slice() {
            [one] => *one,
            [] => {
                let paths: Vec<&str> = mounts
                    .iter()
                    .filter_map(|m| m["mountPath"].as_str())
                    .collect();
                return Err(format!(
                    "{why} is {path}, but container {container} has no volumeMount with \
                     mountPath {path} (its mountPaths: {paths:?})"
                ));
            }
            more => {
                return Err(format!(
                    "container {container} has {} volumeMounts at {path}",
                    more.len()
                ));
            }
        };
        let name = mount["name"].as_str().unwrap_or("?");
        let volume = self.pod_spec()["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == name))
            .ok_or_else(|| {
                format!(
                    "the volumeMount at {path} names volume {name:?}, which the pod does not have"
                )
            })?;
        let Some(host) = volume["hostPath"]["path"].as_str() else {
            return Err(format!(
                "{why} is {path}, mounted from volume {name:?}, which is not a hostPath ({volume}): \
                 the kubelet reaches these files on the host"
            ));
        };
        if normal(host) != normal(path) {
            return Err(format!(
                "{why} is {path} and volume {name:?} is mounted there, but it is hostPath {host}: \
                 the path nfhost sees inside must be the host's path"
            ));
        }
        Ok(mount.clone())
    }

    /// [`Nfhost::host_mount`] for a directory nfhost writes to: not read-only.
    fn writable_host_mount(&self, path: &str, why: &str) -> Result<(), String> {
        let mount = self.host_mount(path, why)?;
        if mount["readOnly"] == true {
            return Err(format!(
                "{why} is {path}, mounted readOnly, but nfhost creates files there"
            ));
        }
        Ok(())
    }
}

/// `path` without trailing slashes (`/` stays `/`).
fn normal(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

#[test]
fn every_document_has_api_version_kind_and_name() {
    let mut problems = Vec::new();
    for rel in [DAEMONSET_FILE, POD_FILE] {
        for (i, doc) in documents(rel).iter().enumerate() {
            let n = i + 1;
            if !doc.is_object() {
                problems.push(format!("{rel}: document {n} is not a mapping: {doc}"));
                continue;
            }
            for (field, value) in [
                ("apiVersion", &doc["apiVersion"]),
                ("kind", &doc["kind"]),
                ("metadata.name", &doc["metadata"]["name"]),
            ] {
                if value.as_str().is_none_or(|s| s.trim().is_empty()) {
                    problems.push(format!(
                        "{rel}: document {n} ({}) has no {field} (found {value})",
                        describe(doc)
                    ));
                }
            }
        }
    }
    report("manifests", &problems);
}

#[test]
fn the_daemonset_has_its_namespace_and_service_account() {
    let docs = documents(DAEMONSET_FILE);
    let nfhost = Nfhost::load();
    let mut problems = Vec::new();
    let ns = nfhost.daemonset["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    if !docs
        .iter()
        .any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == ns)
    {
        problems.push(format!(
            "the DaemonSet is in namespace {ns:?}, which {DAEMONSET_FILE} does not create"
        ));
    }
    let sa = nfhost.pod_spec()["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    if !docs.iter().any(|d| {
        d["kind"] == "ServiceAccount"
            && d["metadata"]["name"] == sa
            && d["metadata"]["namespace"] == ns
    }) {
        problems.push(format!(
            "the DaemonSet's serviceAccountName is {sa:?}, but {DAEMONSET_FILE} has no \
             ServiceAccount of that name in namespace {ns:?}"
        ));
    }
    let selector = &nfhost.daemonset["spec"]["selector"]["matchLabels"];
    let labels = &nfhost.daemonset["spec"]["template"]["metadata"]["labels"];
    for (key, value) in selector.as_object().into_iter().flatten() {
        if &labels[key] != value {
            problems.push(format!(
                "the DaemonSet's selector wants {key}={value}, its pod template has {key}={}",
                labels[key]
            ));
        }
    }
    report(DAEMONSET_FILE, &problems);
}

#[test]
fn the_daemonset_mounts_the_host_directories_its_flags_name() {
    let nfhost = Nfhost::load();
    let mut problems = Vec::new();
    let mut check = |result: Result<(), String>| {
        if let Err(e) = result {
            problems.push(e);
        }
    };

    // nfhost creates nfhost.sock here and the kubelet connects to it there.
    match nfhost.flag("--kubelet-dir") {
        Ok(dir) => {
            check(nfhost.writable_host_mount(&dir, "--kubelet-dir"));
            // The PodResources socket: the directory beside the device plugins'.
            let beside = Path::new(normal(&dir))
                .parent()
                .map(|p| p.join("pod-resources"));
            if beside.as_deref() != Some(Path::new(POD_RESOURCES_DIR)) {
                check(Err(format!(
                    "--kubelet-dir is {dir}, so nfhost looks for PodResources in {:?}, \
                     not {POD_RESOURCES_DIR}",
                    beside
                )));
            }
        }
        Err(e) => check(Err(e)),
    }
    check(
        nfhost
            .host_mount(POD_RESOURCES_DIR, "the PodResources directory")
            .map(|_| ()),
    );
    // The kubelet mounts the host's pf0-vf<N>/ into pods.
    match nfhost.flag("--run-dir") {
        Ok(dir) => check(nfhost.writable_host_mount(&dir, "--run-dir")),
        Err(e) => check(Err(e)),
    }
    // The sled database, kept on the node.
    match nfhost.flag("--data-dir") {
        Ok(dir) => check(nfhost.writable_host_mount(&dir, "--data-dir")),
        Err(e) => check(Err(e)),
    }
    // The principals file: its directory is a mount (the Secret).
    if let Ok(file) = nfhost.flag("--auth") {
        let dir = Path::new(&file)
            .parent()
            .and_then(Path::to_str)
            .unwrap_or("/");
        let mounted = nfhost.container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"].as_str().map(normal) == Some(normal(dir)));
        if !mounted {
            check(Err(format!(
                "--auth is {file}, but nothing is mounted at {dir} (the Secret with principals.toml)"
            )));
        }
    }
    report(DAEMONSET_FILE, &problems);
}

#[test]
fn the_pod_pool_lies_within_the_vfs() {
    let nfhost = Nfhost::load();
    let vfs: u32 = nfhost
        .flag("--vfs")
        .and_then(|v| v.parse().map_err(|e| format!("--vfs {v:?}: {e}")))
        .unwrap_or_else(|e| panic!("{DAEMONSET_FILE}: {e}"));
    let pool = nfhost
        .flag("--k8s-vfs")
        .unwrap_or_else(|e| panic!("{DAEMONSET_FILE}: {e}"));
    let (first, last) = pool.split_once('-').unwrap_or((&pool, &pool));
    let (first, last): (u32, u32) = match (first.trim().parse(), last.trim().parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => panic!("{DAEMONSET_FILE}: --k8s-vfs {pool:?} is not FIRST-LAST"),
    };
    assert!(
        first <= last && last < vfs,
        "{DAEMONSET_FILE}: --k8s-vfs {pool} is not within the {vfs} VFs of --vfs (0-{})",
        vfs.saturating_sub(1)
    );
}

#[test]
fn the_pod_asks_for_the_resource_the_daemonset_advertises() {
    let nfhost = Nfhost::load();
    let resource = nfhost
        .flag("--k8s-resource")
        .unwrap_or_else(|e| panic!("{DAEMONSET_FILE}: {e}"));
    let pod = the_one(POD_FILE, "Pod");
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    let mut asking = 0;
    let mut asked_for = BTreeSet::new();
    for c in &containers {
        let name = c["name"].as_str().unwrap_or("?");
        let limits = &c["resources"]["limits"];
        for key in limits.as_object().into_iter().flatten().map(|(k, _)| k) {
            asked_for.insert(key.clone());
        }
        let limit = &limits[resource.as_str()];
        if limit.is_null() {
            continue;
        }
        asking += 1;
        // 1 or "1": one VF.
        if limit != 1 && limit != "1" {
            problems.push(format!(
                "container {name} asks for {resource}: {limit}; the example takes one VF"
            ));
        }
        let request = &c["resources"]["requests"][resource.as_str()];
        if !request.is_null()
            && request.to_string().trim_matches('"') != limit.to_string().trim_matches('"')
        {
            problems.push(format!(
                "container {name}: requests {resource}: {request} differs from limits {limit} \
                 (an extended resource's request must equal its limit)"
            ));
        }
    }
    if asking == 0 {
        problems.push(format!(
            "the DaemonSet's --k8s-resource is {resource}, but no container of {} has it under \
             resources.limits (they ask for {asked_for:?})",
            describe(&pod)
        ));
    }
    report(POD_FILE, &problems);
}

#[test]
fn the_pod_reads_the_device_plugin_variables_through_a_shell() {
    let pod = the_one(POD_FILE, "Pod");
    let mut problems = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("?");
        if c["resources"]["limits"]
            .as_object()
            .is_none_or(|l| l.is_empty())
        {
            continue;
        }
        let argv = argv(c, &mut problems);
        let text = argv.join(" ");
        for var in POD_MUST_USE {
            if !text.contains(var) {
                problems.push(format!(
                    "container {name}: its command and args never mention {var}"
                ));
            }
        }
        // Kubernetes expands $(VAR) only for variables the spec declares; the
        // device plugin's are injected at Allocate, so only a shell's $VAR works.
        let declared: BTreeSet<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for var in declared.iter().filter(|v| v.starts_with("NFHOST_")) {
            problems.push(format!(
                "container {name} declares env {var} itself: the device plugin sets it"
            ));
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("$(") {
            let inner = &rest[i + 2..];
            let var = inner.split(')').next().unwrap_or_default();
            if var.starts_with("NFHOST_") {
                problems.push(format!(
                    "container {name} uses $({var}): Kubernetes does not expand a variable the \
                     device plugin injects (and a shell would run it as a command); use a \
                     shell's ${var} under `sh -c`"
                ));
            }
            rest = inner;
        }
        let shell = argv
            .first()
            .and_then(|a| Path::new(a).file_name()?.to_str());
        let through_shell = matches!(shell, Some("sh" | "bash" | "dash" | "ash"))
            && argv.get(1).is_some_and(|a| a == "-c");
        if !through_shell {
            problems.push(format!(
                "container {name} runs {:?} directly: the device plugin's variables reach it \
                 only through a shell (`command: [sh, -c]`)",
                argv.first()
            ));
        }
        if c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"].as_str().map(normal) == Some(POD_ENDPOINT_DIR))
        {
            problems.push(format!(
                "container {name} mounts something at {POD_ENDPOINT_DIR}, where the device \
                 plugin mounts the VF's endpoint directory"
            ));
        }
    }
    report(POD_FILE, &problems);
}

/// The port a probe uses: `httpGet`, `tcpSocket` or `grpc`, by number or by the
/// name of one of the container's ports.
fn probe_port(probe: &Value, container: &Value) -> Result<u64, String> {
    let port = ["httpGet", "tcpSocket", "grpc"]
        .iter()
        .find_map(|k| {
            probe[*k]["port"]
                .as_u64()
                .map(Ok)
                .or_else(|| probe[*k]["port"].as_str().map(Err))
        })
        .ok_or_else(|| format!("it uses no port (not httpGet, tcpSocket or grpc): {probe}"))?;
    match port {
        Ok(n) => Ok(n),
        Err(name) => container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .ok_or_else(|| format!("its port {name:?} is not a named port of the container")),
    }
}

#[test]
fn the_probes_use_the_http_port() {
    let nfhost = Nfhost::load();
    let http = nfhost
        .flag("--http")
        .unwrap_or_else(|e| panic!("{DAEMONSET_FILE}: {e}"));
    let addr: SocketAddr = http
        .parse()
        .unwrap_or_else(|e| panic!("{DAEMONSET_FILE}: --http {http:?} is not ADDR:PORT: {e}"));
    let mut problems = Vec::new();
    if addr.ip().is_loopback() {
        problems.push(format!(
            "--http is {http}: the kubelet probes the pod's address, not its loopback"
        ));
    }
    let want = u64::from(addr.port());
    for kind in ["livenessProbe", "readinessProbe"] {
        let probe = &nfhost.container[kind];
        if probe.is_null() {
            problems.push(format!("the nfhost container has no {kind}"));
            continue;
        }
        match probe_port(probe, &nfhost.container) {
            Ok(port) if port == want => {}
            Ok(port) => problems.push(format!(
                "{kind} uses port {port}, but --http is {http} (port {want})"
            )),
            Err(e) => problems.push(format!("{kind}: {e}")),
        }
    }
    let probe = &nfhost.container["startupProbe"];
    if !probe.is_null() {
        match probe_port(probe, &nfhost.container) {
            Ok(port) if port == want => {}
            Ok(port) => problems.push(format!(
                "startupProbe uses port {port}, but --http is {http} (port {want})"
            )),
            Err(e) => problems.push(format!("startupProbe: {e}")),
        }
    }
    let declared = nfhost.container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["containerPort"] == want);
    if !declared {
        problems.push(format!(
            "--http is {http}, but the container declares no containerPort {want}"
        ));
    }
    report(DAEMONSET_FILE, &problems);
}

/// The long flags `nfhost serve --help` lists as options (`--name` at the start
/// of an option line, after `-x, ` where there is a short one).
fn accepted_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = match line.strip_prefix('-') {
                Some(rest) if !rest.starts_with('-') => rest.split_once(", ")?.1,
                _ => line,
            };
            let name = line.strip_prefix("--")?;
            let end = name
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(name.len());
            (end > 0).then(|| format!("--{}", &name[..end]))
        })
        .collect()
}

#[test]
fn the_daemonset_passes_only_flags_nfhost_serve_accepts() {
    let nfhost = Nfhost::load();
    let out = Command::new(env!("CARGO_BIN_EXE_nfhost"))
        .args(["serve", "--help"])
        .output()
        .expect("running nfhost serve --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nfhost serve --help failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let accepted = accepted_flags(&help);
    assert!(
        accepted.contains("--data-dir") && accepted.contains("--help"),
        "could not read the flags of `nfhost serve --help` (found {accepted:?}):\n{help}"
    );
    let passed: Vec<&str> = nfhost
        .serve_args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect();
    let unknown: Vec<&str> = passed
        .iter()
        .copied()
        .filter(|f| !accepted.contains(*f))
        .collect();
    assert!(
        unknown.is_empty(),
        "{DAEMONSET_FILE} passes {} flag(s) that `nfhost serve --help` does not list: {}\n\
         (nfhost serve accepts: {})",
        unknown.len(),
        unknown.join(" "),
        accepted.iter().cloned().collect::<Vec<_>>().join(" ")
    );
}

#[test]
fn help_flags_are_read_from_option_lines_only() {
    let help = "Usage: nfhost serve [OPTIONS]\n\nOptions:\n      --grpc <GRPC>\n          \
                gRPC address; see --not-a-flag\n      --insecure [<BOOL>]\n  -h, --help\n          \
                Print help\n";
    let flags: Vec<String> = accepted_flags(help).into_iter().collect();
    assert_eq!(flags, ["--grpc", "--help", "--insecure"]);
}
