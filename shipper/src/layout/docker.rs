//! Docker's json-file log driver: the daemon's containers directory (the
//! root, normally `/var/lib/docker/containers`).
//!
//! ```text
//! <root>/<id>/<id>-json.log          current file, one JSON object per line
//! <root>/<id>/<id>-json.log.<n>      rotated (max-file), same identity
//! <root>/<id>/<id>-json.log.<n>.gz   compressed rotation: skipped
//! <root>/<id>/config.v2.json         the container's configuration
//! ```
//!
//! `<id>` is the 64-hex-digit container id. When `config.v2.json` exists its
//! `Name` and `Config.Labels` name the job, first rule that applies:
//!
//! 1. label `sluice.job`, when it is a valid `role/env/name` over
//!    `[A-Za-z0-9_.-]` (checked, not sanitized: an invalid one is skipped and
//!    reported in the `identity_problem` label);
//! 2. Compose labels: `<com.docker.compose.project>/compose/<…service>`,
//!    instance `com.docker.compose.container-number` (Compose counts from 1);
//! 3. the container name: `docker/default/<Name without its leading />`;
//! 4. without a configuration: `docker/default/<first 12 hex digits of id>`.
//!
//! Names from the configuration are sanitized into job-key components. Label
//! `sluice.instance` (a decimal number) overrides the instance.
//!
//! | field    | from                                                    |
//! |----------|---------------------------------------------------------|
//! | job      | the rules above                                         |
//! | instance | `sluice.instance`, else the Compose container number, else 0 |
//! | task_id  | the full container id                                   |
//! | run      | 0: a restarted container appends to the same file       |
//! | process  | the container name, else the short id                   |
//! | stream   | unspecified: each json-file line says                   |
//! | labels   | `container_id`, and `container_name`, `image` when known |
//!
//! A configuration that cannot be read or is not valid JSON, or that names
//! another container, is a [`LayoutError`] naming it (and the field, such as
//! `Config.Labels`, when the JSON is well formed). The sandbox is
//! `<root>/<id>`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_schema::pb::{Layout as LayoutProto, Stream};

use super::names::{
    IDENTITY_PROBLEM, check_job_key, is_plain, job_key, parse_index, plain_components,
    read_metadata,
};
use super::{Framing, Identity, Layout, LayoutError};
use crate::error::decode_json;

const CONFIG: &str = "config.v2.json";
const LOG_SUFFIX: &str = "-json.log";
const JOB_LABEL: &str = "sluice.job";
const INSTANCE_LABEL: &str = "sluice.instance";
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";

/// The [`Layout`] for Docker's json-file driver: one sandbox per container
/// directory `<root>/<id>`, identity from `config.v2.json` when present.
#[derive(Debug)]
pub struct Docker;

/// The parts of `config.v2.json` identity needs.
#[derive(Debug, Default, Deserialize)]
struct ContainerConfig {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<InnerConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct InnerConfig {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

impl Layout for Docker {
    fn kind(&self) -> LayoutProto {
        LayoutProto::Docker
    }

    fn framing(&self) -> Framing {
        Framing::DockerJson
    }

    fn max_depth(&self) -> usize {
        // <id>
        1
    }

    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError> {
        let Some(parts) = plain_components(root, path) else {
            return Ok(None);
        };
        let [id, file] = parts[..] else {
            return Ok(None);
        };
        if !is_container_id(id) || !is_log_file(id, file) {
            return Ok(None);
        }
        let config = read_config(&root.join(id).join(CONFIG), id)?;
        Ok(Some(identity(id, config)))
    }

    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let parts = plain_components(root, path)?;
        Some(root.join(parts.first()?))
    }
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<id>-json.log` or `<id>-json.log.<n>`.
fn is_log_file(id: &str, file: &str) -> bool {
    match file
        .strip_prefix(id)
        .and_then(|f| f.strip_prefix(LOG_SUFFIX))
    {
        Some("") => true,
        Some(rest) => rest.strip_prefix('.').and_then(parse_index).is_some(),
        None => false,
    }
}

/// The container's configuration; `None` when it has none.
fn read_config(path: &Path, id: &str) -> Result<Option<ContainerConfig>, LayoutError> {
    let fail = |problem: String| LayoutError::new(path, format!("container config {problem}"));
    if let Err(e) = std::fs::metadata(path) {
        return match e.kind() {
            ErrorKind::NotFound => Ok(None),
            _ => Err(fail(format!("failed to open: {e}"))),
        };
    }
    let bytes = read_metadata(path).map_err(fail)?;
    let config: ContainerConfig = decode_json(&bytes)
        .map_err(|(field, e)| fail(format!("is invalid: {e}")).in_field(field))?;
    match &config.id {
        Some(other) if other != id => Err(fail(format!("names container {other:?}"))),
        _ => Ok(Some(config)),
    }
}

fn identity(id: &str, config: Option<ContainerConfig>) -> Identity {
    let short = &id[..12];
    let config = config.unwrap_or_default();
    let name = config
        .name
        .as_deref()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .filter(|n| is_plain(n));
    let inner = config.config.unwrap_or_default();
    let container_labels = inner.labels.unwrap_or_default();
    let label = |key: &str| container_labels.get(key).map(String::as_str);

    let mut labels = BTreeMap::from([("container_id".to_string(), id.to_string())]);
    if let Some(name) = name {
        labels.insert("container_name".into(), name.into());
    }
    if let Some(image) = inner.image.filter(|i| !i.is_empty()) {
        labels.insert("image".into(), image);
    }
    let mut problems = Vec::new();

    let explicit = label(JOB_LABEL).and_then(|job| match check_job_key(job) {
        Ok(()) => Some(job.to_string()),
        Err(e) => {
            problems.push(format!("label {JOB_LABEL} ignored: {e}"));
            None
        }
    });
    let compose = label(COMPOSE_PROJECT).zip(label(COMPOSE_SERVICE));
    let (job, mut instance) = match (explicit, compose, name) {
        (Some(job), _, _) => (job, 0),
        (None, Some((project, service)), _) => (
            job_key(project, "compose", service),
            label(COMPOSE_NUMBER).and_then(parse_index).unwrap_or(0),
        ),
        (None, None, Some(name)) => (job_key("docker", "default", name), 0),
        (None, None, None) => (job_key("docker", "default", short), 0),
    };
    if let Some(text) = label(INSTANCE_LABEL) {
        match parse_index(text) {
            Some(n) => instance = n,
            None => problems.push(format!(
                "label {INSTANCE_LABEL} ignored: {text:?} is not a decimal number"
            )),
        }
    }
    if !problems.is_empty() {
        labels.insert(IDENTITY_PROBLEM.into(), problems.join("; "));
    }
    Identity {
        job,
        instance,
        task_id: id.to_string(),
        run: 0,
        process: name.unwrap_or(short).to_string(),
        stream: Stream::Unspecified,
        labels,
        multiline: None,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const ID: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";

    /// A `config.v2.json` as dockerd writes it for a Compose service
    /// (trimmed of the network and mount sections).
    fn compose_config(extra_labels: &str) -> String {
        format!(
            r#"{{"StreamConfig":{{}},"State":{{"Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"RemovalInProgress":false,"Dead":false,"Pid":41235,"ExitCode":0,"Error":"","StartedAt":"2025-11-21T07:06:58.412877331Z","FinishedAt":"0001-01-01T00:00:00Z","Health":null}},"ID":"{ID}","Created":"2025-11-21T07:06:57.981234567Z","Managed":false,"Path":"/docker-entrypoint.sh","Args":["nginx","-g","daemon off;"],"Config":{{"Hostname":"4f3c2b1a0e9d","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"ExposedPorts":{{"80/tcp":{{}}}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","NGINX_VERSION=1.27.2"],"Cmd":["nginx","-g","daemon off;"],"Image":"nginx:1.27","Volumes":null,"WorkingDir":"","Entrypoint":["/docker-entrypoint.sh"],"OnBuild":null,"Labels":{{"com.docker.compose.config-hash":"9b1c7e0f","com.docker.compose.container-number":"2","com.docker.compose.depends_on":"","com.docker.compose.image":"sha256:3b25b682ea82b2db3cc4fd48db818be788ee3f902ac7378090cf2624ec2442df","com.docker.compose.oneoff":"False","com.docker.compose.project":"shop","com.docker.compose.project.working_dir":"/srv/shop","com.docker.compose.service":"web","com.docker.compose.version":"2.29.7","maintainer":"NGINX Docker Maintainers <docker-maint@nginx.com>"{extra_labels}}},"StopSignal":"SIGQUIT"}},"Image":"sha256:3b25b682ea82b2db3cc4fd48db818be788ee3f902ac7378090cf2624ec2442df","NetworkSettings":{{"Bridge":"","SandboxID":"","Ports":{{}}}},"LogPath":"/var/lib/docker/containers/{ID}/{ID}-json.log","Name":"/shop-web-2","Driver":"overlay2","OS":"linux","RestartCount":1,"HasBeenStartedBefore":true,"HasBeenManuallyStopped":false,"MountPoints":{{}},"AppArmorProfile":"docker-default","HostnamePath":"/var/lib/docker/containers/{ID}/hostname","HostsPath":"/var/lib/docker/containers/{ID}/hosts","ShmPath":"","ResolvConfPath":"/var/lib/docker/containers/{ID}/resolv.conf","SeccompProfile":"","NoNewPrivileges":false,"LocalNodeName":""}}"#
        )
    }

    /// `/var/lib/docker/containers` with one container, its log rotated
    /// twice (one rotation compressed).
    fn containers(config: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(ID);
        fs::create_dir_all(dir.join("checkpoints")).unwrap();
        for file in [
            format!("{ID}-json.log"),
            format!("{ID}-json.log.1"),
            format!("{ID}-json.log.2.gz"),
            "hostname".into(),
            "hosts".into(),
            "hostconfig.json".into(),
        ] {
            fs::write(dir.join(file), "").unwrap();
        }
        if let Some(config) = config {
            fs::write(dir.join(CONFIG), config).unwrap();
        }
        root
    }

    fn identify(root: &Path, file: &str) -> Result<Option<Identity>, LayoutError> {
        Docker.identify(root, &root.join(ID).join(file))
    }

    #[test]
    fn compose_containers() {
        let dir = containers(Some(&compose_config("")));
        let root = dir.path();
        let id = identify(root, &format!("{ID}-json.log")).unwrap().unwrap();
        assert_eq!(
            id,
            Identity {
                job: "shop/compose/web".into(),
                instance: 2,
                task_id: ID.into(),
                run: 0,
                process: "shop-web-2".into(),
                stream: Stream::Unspecified,
                labels: BTreeMap::from([
                    ("container_id".into(), ID.into()),
                    ("container_name".into(), "shop-web-2".into()),
                    ("image".into(), "nginx:1.27".into()),
                ]),
                multiline: None,
            }
        );
        let rotated = identify(root, &format!("{ID}-json.log.1"))
            .unwrap()
            .unwrap();
        assert_eq!(rotated, id);
        assert_eq!(
            Docker.sandbox(root, &root.join(ID).join(format!("{ID}-json.log"))),
            Some(root.join(ID))
        );
    }

    #[test]
    fn sluice_labels_override() {
        let labels = r#","sluice.job":"shop/prod/frontend","sluice.instance":"7""#;
        let dir = containers(Some(&compose_config(labels)));
        let id = identify(dir.path(), &format!("{ID}-json.log"))
            .unwrap()
            .unwrap();
        assert_eq!((id.job.as_str(), id.instance), ("shop/prod/frontend", 7));
        assert!(!id.labels.contains_key(IDENTITY_PROBLEM));

        let labels = r#","sluice.job":"shop/../../etc","sluice.instance":"-1""#;
        let dir = containers(Some(&compose_config(labels)));
        let id = identify(dir.path(), &format!("{ID}-json.log"))
            .unwrap()
            .unwrap();
        assert_eq!((id.job.as_str(), id.instance), ("shop/compose/web", 2));
        assert_eq!(
            id.labels[IDENTITY_PROBLEM],
            "label sluice.job ignored: job key \"shop/../../etc\" is not role/env/name; \
             label sluice.instance ignored: \"-1\" is not a decimal number"
        );
    }

    #[test]
    fn plain_containers_use_their_name_or_short_id() {
        let config = format!(
            r#"{{"ID":"{ID}","Name":"/redis cache","Config":{{"Image":"redis:7","Labels":null}}}}"#
        );
        let dir = containers(Some(&config));
        let id = identify(dir.path(), &format!("{ID}-json.log"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.job.as_str(), id.process.as_str()),
            ("docker/default/redis_cache", "redis cache")
        );

        let dir = containers(None);
        let id = identify(dir.path(), &format!("{ID}-json.log"))
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            Identity {
                job: "docker/default/4f3c2b1a0e9d".into(),
                instance: 0,
                task_id: ID.into(),
                run: 0,
                process: "4f3c2b1a0e9d".into(),
                stream: Stream::Unspecified,
                labels: BTreeMap::from([("container_id".into(), ID.into())]),
                multiline: None,
            }
        );

        // A name that is not a plain name is not used, not even as process.
        let config = r#"{"Name":"/../../x\n","Config":{}}"#;
        let dir = containers(Some(config));
        let id = identify(dir.path(), &format!("{ID}-json.log"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.job.as_str(), id.process.as_str()),
            ("docker/default/4f3c2b1a0e9d", "4f3c2b1a0e9d")
        );
    }

    #[test]
    fn bad_configs_are_errors_naming_the_config() {
        let other = compose_config("").replace(&format!("\"ID\":\"{ID}\""), "\"ID\":\"abc\"");
        for (config, problem) in [
            (
                "{\"Name\":",
                "container config is invalid: EOF while parsing a value at line 1 column 8",
            ),
            (
                "{\"Name\":5}",
                "container config is invalid: invalid type: integer `5`, expected a string at line 1 column 9",
            ),
            (other.as_str(), "container config names container \"abc\""),
        ] {
            let dir = containers(Some(config));
            let err = identify(dir.path(), &format!("{ID}-json.log")).unwrap_err();
            assert_eq!(err.path, dir.path().join(ID).join(CONFIG));
            assert_eq!(err.problem, problem);
        }
    }

    #[test]
    fn other_files_are_not_logs() {
        let dir = containers(Some(&compose_config("")));
        let root = dir.path();
        for file in [
            format!("{ID}-json.log.2.gz"),
            format!("{ID}-json.log.01"),
            format!("{ID}-json.logx"),
            format!("{}-json.log", &ID[..12]),
            "hostconfig.json".into(),
            CONFIG.into(),
            format!("checkpoints/{ID}-json.log"),
            format!("../{ID}/{ID}-json.log"),
        ] {
            assert_eq!(identify(root, &file), Ok(None), "{file}");
        }
        let upper = ID.to_uppercase();
        let path = root.join(&upper).join(format!("{upper}-json.log"));
        assert_eq!(Docker.identify(root, &path), Ok(None));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_not_logs() {
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("/var/lib/docker/containers");
        let path = root
            .join(ID)
            .join(std::ffi::OsStr::from_bytes(b"\xff-json.log"));
        assert_eq!(Docker.identify(root, &path), Ok(None));
    }

    #[test]
    fn kind_framing_and_depth() {
        assert_eq!(Docker.kind(), LayoutProto::Docker);
        assert_eq!(Docker.framing(), Framing::DockerJson);
        assert_eq!(Docker.max_depth(), 1);
    }

    /// Identifies the log of a container whose `config.v2.json` holds
    /// `bytes`: never a panic; an error names the file and, when the JSON
    /// is well formed, the field.
    fn check_config(bytes: &[u8]) -> Result<(), TestCaseError> {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join(ID).join(CONFIG);
        fs::create_dir_all(config.parent().unwrap()).unwrap();
        fs::write(&config, bytes).unwrap();
        match Docker.identify(
            root.path(),
            &root.path().join(ID).join(format!("{ID}-json.log")),
        ) {
            Ok(Some(identity)) => {
                prop_assert_eq!(&identity.task_id, ID);
                prop_assert!(check_job_key(&identity.job).is_ok(), "{}", identity.job);
            }
            Ok(None) => prop_assert!(false, "a log file was not recognised"),
            Err(err) => {
                prop_assert_eq!(&err.path, &config);
                prop_assert!(err.problem.starts_with("container config "), "{}", err);
                prop_assert!(err.to_string().starts_with(&config.display().to_string()));
                let object =
                    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.is_object());
                let names_container = err.problem.starts_with("container config names container");
                prop_assert!(
                    !object || names_container || !err.field.is_empty(),
                    "{:?}: {} names no field",
                    String::from_utf8_lossy(bytes),
                    err
                );
            }
        }
        Ok(())
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn docker_config_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_config(&bytes)?;
        }

        #[test]
        fn docker_config_mutations_never_panic(
            bytes in crate::mutate::mutated(
                compose_config(r#","sluice.job":"shop/prod/web","sluice.instance":"7""#).into_bytes(),
                crate::mutate::JSON_PIECES,
            ),
        ) {
            check_config(&bytes)?;
        }
    }

    #[test]
    fn a_wrong_field_in_the_config_is_named() {
        let config = compose_config(r#","sluice.instance":7"#);
        let dir = containers(Some(&config));
        let err = identify(dir.path(), &format!("{ID}-json.log")).unwrap_err();
        assert_eq!(err.path, dir.path().join(ID).join(CONFIG));
        assert_eq!(err.field, "Config.Labels.sluice.instance");
        assert!(
            err.to_string().starts_with(&format!(
                "{}: Config.Labels.sluice.instance: container config is invalid: invalid type: \
                 integer `7`, expected a string at line 1 column ",
                err.path.display()
            )),
            "{err}"
        );
    }
}
