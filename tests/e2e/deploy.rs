//! The deployment files in `deploy/`, read by parsers of their formats: every
//! flag they pass exists in `sluice shipper --help`, every layout in the
//! code, every path they use is mounted (Kubernetes) or allowed (systemd),
//! and the image recipe builds binaries this workspace has. No Kubernetes,
//! Nomad, systemd or Docker runs here: what they would do with the files
//! is not tested (deploy/README.md says so).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{SLUICE, sluice_ok};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// The long flags and environment variables `sluice shipper --help` names.
fn shipper_help() -> (BTreeSet<String>, BTreeSet<String>) {
    let help = sluice_ok(&["shipper", "--help"]);
    let words = |prefix: &str| -> BTreeSet<String> {
        help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .filter(|w| w.starts_with(prefix) && w.len() > prefix.len())
            .map(str::to_string)
            .collect()
    };
    (words("--"), words("SLUICE_"))
}

/// Checks `args` (the words after `sluice`): a shipper command whose every
/// flag is known and whose layout is one the code reads. Returns the value
/// of each flag.
fn check_args(file: &str, args: &[String]) -> std::collections::BTreeMap<String, String> {
    let (flags, _) = shipper_help();
    assert_eq!(
        args.first().map(String::as_str),
        Some("shipper"),
        "{file}: {args:?}"
    );
    let mut values = std::collections::BTreeMap::new();
    let mut i = 1;
    while i < args.len() {
        let flag = &args[i];
        assert!(
            flags.contains(flag.as_str()),
            "{file}: {flag} is not a flag of `sluice shipper` ({flags:?})"
        );
        let value = args.get(i + 1).cloned().unwrap_or_default();
        assert!(!value.starts_with("--"), "{file}: {flag} has no value");
        values.insert(flag.clone(), value);
        i += 2;
    }
    let layout = &values["--layout"];
    assert!(
        layout.parse::<sluice_shipper::layout::LayoutKind>().is_ok(),
        "{file}: layout {layout} is not one the shipper reads"
    );
    values
}

#[test]
fn the_kubernetes_daemonset_mounts_what_its_shipper_uses() {
    let text = std::fs::read_to_string(deploy("kubernetes/sluice-shipper.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "DaemonSet",
    ] {
        assert!(kinds.contains(kind), "no {kind}: {kinds:?}");
    }
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let values = check_args("the DaemonSet", &args);
    assert_eq!(values["--layout"], "kubernetes");
    for bound in ["requests", "limits"] {
        let r = &container["resources"][bound];
        assert!(
            r["cpu"].is_string() && r["memory"].is_string(),
            "{bound}: {r}"
        );
    }
    // Each volume mount and what backs it.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts: Vec<(String, &Value)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            let volume = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            (m["mountPath"].as_str().unwrap().to_string(), volume)
        })
        .collect();
    let backing = |path: &str| {
        mounts
            .iter()
            .filter(|(at, _)| path.starts_with(at.as_str()))
            .max_by_key(|(at, _)| at.len())
            .map(|(at, v)| (at.clone(), *v))
            .unwrap_or_else(|| panic!("{path} is on no mounted volume"))
    };
    // The pods' logs: the node's /var/log/pods, read only.
    let (at, root) = backing(&values["--root"]);
    assert_eq!(root["hostPath"]["path"], "/var/log/pods");
    let pods_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == at.as_str())
        .unwrap();
    assert_eq!(pods_mount["readOnly"], true);
    // Checkpoints on the node, so a new pod resumes.
    assert!(backing(&values["--state-dir"]).1["hostPath"]["path"].is_string());
    // Files the flags name come from the ConfigMap and Secrets.
    let configmap = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let secrets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Secret").collect();
    for flag in [
        "--config",
        "--tokens",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--register-token-file",
    ] {
        let path = &values[flag];
        let (at, volume) = backing(path);
        let key = path.strip_prefix(&format!("{at}/")).unwrap();
        let data = if let Some(name) = volume["configMap"]["name"].as_str() {
            assert_eq!(configmap["metadata"]["name"], name);
            &configmap["data"]
        } else {
            let name = volume["secret"]["secretName"]
                .as_str()
                .unwrap_or_else(|| panic!("{flag}: {volume}"));
            &secrets
                .iter()
                .find(|s| s["metadata"]["name"] == name)
                .unwrap()["stringData"]
        };
        assert!(
            data.get(key).is_some(),
            "{flag} {path}: no key {key} in {data}"
        );
    }
    // The shipper's config parses as the shipper reads it.
    let config = configmap["data"]["shipper.toml"].as_str().unwrap();
    let table: toml::Table = toml::from_str(config).unwrap();
    let mut shipper = table["shipper"].as_table().unwrap().clone();
    shipper.insert("host".into(), "n".into());
    shipper.insert("layout".into(), "kubernetes".into());
    shipper.insert("root".into(), "/var/log/pods".into());
    shipper.insert("state_dir".into(), "/tmp/s".into());
    let parsed: sluice_shipper::ShipperConfig = toml::Value::Table(shipper)
        .try_into()
        .expect("a valid [shipper] table");
    parsed.validate().unwrap();
    // Environment variables the container sets are ones the shipper reads.
    let (_, env) = shipper_help();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        assert!(
            !name.starts_with("SLUICE_") || env.contains(name),
            "{name} is not read by `sluice shipper`"
        );
        if name.starts_with("SLUICE_") {
            let key = var["valueFrom"]["configMapKeyRef"]["key"].as_str().unwrap();
            assert!(configmap["data"].get(key).is_some(), "{name}");
        }
    }
    for arg in &args {
        if let Some(rest) = arg.split("$(").nth(1) {
            let var = rest.split(')').next().unwrap();
            assert!(
                container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == var),
                "{arg}: $({var}) is not set"
            );
        }
    }
}

#[test]
fn the_nomad_system_job_runs_a_known_shipper_command() {
    let Some(python) = crate::harness::python_with("DEPLOY", "import hcl2", "python-hcl2") else {
        return;
    };
    let path = deploy("nomad/sluice-shipper.nomad.hcl");
    let out = Command::new(python)
        .args([
            "-c",
            "import hcl2, json, sys; print(json.dumps(hcl2.load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    // python-hcl2 gives each block as a list of objects keyed by its label
    // (quoted, in python-hcl2 8), and strings with their quotes.
    let block = |v: &Value, key: &str| -> Value {
        let v = if v.is_array() { &v[0] } else { v };
        let found = v.get(format!("\"{key}\"")).or_else(|| v.get(key)).cloned();
        let found = found.unwrap_or_else(|| panic!("no {key} in {v}"));
        if found.is_array() && found[0].is_object() {
            found[0].clone()
        } else {
            found
        }
    };
    let job = block(&job["job"], "sluice-shipper");
    assert!(job["type"].as_str().unwrap().contains("system"), "{job}");
    let task = block(&block(&block(&job, "group"), "shipper")["task"], "shipper");
    let config = block(&task, "config");
    assert!(
        config["command"]
            .as_str()
            .unwrap()
            .trim_matches('"')
            .ends_with("/sluice")
    );
    let args: Vec<String> = config["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().trim_matches('"').to_string())
        .collect();
    let values = check_args("the Nomad job", &args);
    assert_eq!(values["--layout"], "nomad");
    assert!(values.contains_key("--register"), "{values:?}");
}

#[test]
fn the_systemd_unit_runs_a_known_shipper_command() {
    let text = std::fs::read_to_string(deploy("systemd/sluice-shipper.service")).unwrap();
    let key = |name: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .collect()
    };
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(text.contains(section), "{section}");
    }
    let exec = key("ExecStart");
    assert_eq!(exec.len(), 1);
    let words: Vec<String> = exec[0].split_whitespace().map(str::to_string).collect();
    assert!(words[0].ends_with("/sluice"), "{words:?}");
    let values = check_args("the systemd unit", &words[1..]);
    assert_eq!(values["--layout"], "mesos");
    // The state directory is writable under ProtectSystem=strict.
    let writable = key("ReadWritePaths").join(" ");
    assert!(
        values["--state-dir"].starts_with(writable.trim()),
        "{} not under {writable}",
        values["--state-dir"]
    );
    // The address to register at comes from the environment file.
    let (_, env) = shipper_help();
    assert!(env.contains("SLUICE_REGISTER") && env.contains("SLUICE_BUS"));
    assert_eq!(key("EnvironmentFile").len(), 1);
}

#[test]
fn the_dockerfile_builds_binaries_this_workspace_has() {
    let text = std::fs::read_to_string(deploy("docker/Dockerfile")).unwrap();
    let instructions: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let known = [
        "FROM",
        "RUN",
        "WORKDIR",
        "COPY",
        "USER",
        "ENTRYPOINT",
        "CMD",
    ];
    for (k, _) in &instructions {
        assert!(known.contains(&k.as_str()), "unknown instruction {k}");
    }
    // The Rust image is at least the workspace's rust-version.
    let from = &instructions.iter().find(|(k, _)| k == "FROM").unwrap().1;
    let version = from.split(':').nth(1).unwrap().split('-').next().unwrap();
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let parse = |v: &str| {
        v.split('.')
            .map(|n| n.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(parse(version) >= parse(wanted), "{version} < {wanted}");
    // The build names binaries that exist: the test build made them too.
    let build = instructions
        .iter()
        .find(|(k, v)| k == "RUN" && v.contains("cargo build"))
        .unwrap();
    let bins: Vec<&str> = build
        .1
        .split("--bin ")
        .skip(1)
        .map(|b| b.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(bins, ["sluice", "tailll"]);
    for bin in &bins {
        assert!(
            Path::new(SLUICE).with_file_name(bin).exists(),
            "no binary {bin}"
        );
    }
    assert!(build.1.contains("--locked") && build.1.contains("--release"));
    // What is copied is what the entry point runs.
    let copy = instructions
        .iter()
        .find(|(k, v)| k == "COPY" && v.contains("--from=build"))
        .unwrap();
    let dest = copy.1.split_whitespace().last().unwrap();
    let entry: Vec<String> = serde_json::from_str(
        &instructions
            .iter()
            .find(|(k, _)| k == "ENTRYPOINT")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(entry[0], format!("{dest}sluice"));
    assert!(copy.1.contains("target/release/sluice") && copy.1.contains("target/release/tailll"));
}

#[test]
fn the_api_mode_grants_get_on_pods_to_the_shippers_account_only() {
    let text = std::fs::read_to_string(deploy("kubernetes/api-mode.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect();
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    // The subject is the DaemonSet's service account.
    let main = std::fs::read_to_string(deploy("kubernetes/sluice-shipper.yaml")).unwrap();
    let main: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&main)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let account = main.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        account["metadata"]["namespace"]
    );
    // The flag it asks for exists.
    assert!(shipper_help().0.contains("--kubernetes-api"));
    assert!(text.contains("`--kubernetes-api` and `in-cluster`"));
}
