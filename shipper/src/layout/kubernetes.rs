//! Kubernetes: the kubelet's pod log directory (the root, normally
//! `/var/log/pods`), in CRI format.
//!
//! ```text
//! <root>/<namespace>_<pod>_<uid>/<container>/<restart>.log
//! <root>/<namespace>_<pod>_<uid>/<container>/<restart>.log.20251121-070700      rotated
//! <root>/<namespace>_<pod>_<uid>/<container>/<restart>.log.20251121-070700.gz   compressed: skipped
//! ```
//!
//! | field    | from                                                    |
//! |----------|---------------------------------------------------------|
//! | job      | `<namespace>/k8s/<workload>`, each sanitized to `[A-Za-z0-9_.-]` |
//! | instance | the StatefulSet ordinal, else 0                         |
//! | task_id  | the pod uid                                             |
//! | run      | `<restart>`, the container's restart count              |
//! | process  | `<container>`                                           |
//! | stream   | unspecified: each CRI line says                         |
//! | labels   | `namespace`, `pod`, `uid`                               |
//!
//! The workload is read off the pod name by the shapes controllers give
//! names, checked in this order (the random suffix alphabet has no vowels
//! and no `0`, `1` or `3`, which keeps most names from matching by chance):
//!
//! 1. Deployment (through its ReplicaSet): `<name>-<hash>-<5>`, the
//!    pod-template hash being 6 to 10 of `[0-9bcdf]`;
//! 2. DaemonSet, Job and other `generateName` pods: `<name>-<5>`, the five
//!    characters from `[bcdfghjklmnpqrstvwxz2456789]` and not all digits;
//!    a CronJob's Job adds `-<minutes since 1970>` (8 or more digits), also
//!    stripped;
//! 3. StatefulSet: `<name>-<ordinal>`, the ordinal becoming the instance;
//! 4. anything else (static pods, bare pods): the pod name, instance 0.
//!
//! A `generateName` pod whose random suffix happens to be all digits is
//! read as a StatefulSet pod: the name is then right and only the instance
//! is wrong. Static pods are named `<name>-<node>`; the node name stays in
//! the workload (and a node name ending in `-<digits>` gives an instance).
//!
//! With the API server's view (`[shipper.kubernetes_api]`, see
//! [`super::pod_api`]), the workload is the pod's controller instead (a
//! ReplicaSet's Deployment, a CronJob's Job's CronJob), the instance a
//! StatefulSet's `apps.kubernetes.io/pod-index` label, and the pod's labels
//! are added to the source's (the fixed three win); a pod the API does not
//! answer for is read by its name as above.
//!
//! A `.log` file whose pod directory is not `<namespace>_<pod>_<uid>` is a
//! [`LayoutError`]; other files are not log files. The sandbox is
//! `<root>/<namespace>_<pod>_<uid>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_schema::pb::{Layout as LayoutProto, Stream};

use super::names::{job_key, labels, parse_index, plain_components};
use super::pod_api::PodApi;
use super::{Framing, Identity, Layout, LayoutError};

/// Characters of the random suffix the API server gives `generateName`.
const SUFFIX_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

/// The [`Layout`] for the kubelet's `/var/log/pods`: CRI-framed files, one
/// sandbox per pod directory, identity read off the pod directory name (and
/// the API server's view of the pod, when given one).
#[derive(Debug, Default)]
pub struct Kubernetes {
    api: Option<Arc<PodApi>>,
}

impl Kubernetes {
    /// The layout that asks `api` about each pod.
    pub fn with_api(api: Arc<PodApi>) -> Kubernetes {
        Kubernetes { api: Some(api) }
    }
}

impl Layout for Kubernetes {
    fn kind(&self) -> LayoutProto {
        LayoutProto::Kubernetes
    }

    fn framing(&self) -> Framing {
        Framing::Cri
    }

    fn max_depth(&self) -> usize {
        // <namespace>_<pod>_<uid>/<container>
        2
    }

    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError> {
        let Some(parts) = plain_components(root, path) else {
            return Ok(None);
        };
        let [pod_dir, container, file] = parts[..] else {
            return Ok(None);
        };
        let Some(restart) = parse_log_name(file) else {
            return Ok(None);
        };
        let Some((namespace, pod, uid)) = split_pod_dir(pod_dir) else {
            return Err(LayoutError::new(
                path,
                format!("pod directory {pod_dir:?} is not <namespace>_<pod>_<uid>"),
            ));
        };
        let (named, instance) = workload(pod);
        let mut identity = Identity {
            job: job_key(namespace, "k8s", named),
            instance,
            task_id: uid.to_string(),
            run: restart,
            process: container.to_string(),
            stream: Stream::Unspecified,
            labels: labels([("namespace", namespace), ("pod", pod), ("uid", uid)]),
            multiline: None,
        };
        if let Some(meta) = self
            .api
            .as_ref()
            .and_then(|a| a.lookup(namespace, pod, uid))
        {
            if let Some(workload) = meta.workload() {
                identity.job = job_key(namespace, "k8s", &workload);
                identity.instance = meta.ordinal().unwrap_or(0);
            }
            for (key, value) in &meta.labels {
                identity
                    .labels
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        Ok(Some(identity))
    }

    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let parts = plain_components(root, path)?;
        Some(root.join(parts.first()?))
    }
}

/// The restart number of `<restart>.log` and its uncompressed rotations
/// `<restart>.log.<timestamp>` (digits and `-`, as the kubelet writes
/// `20060102-150405`).
fn parse_log_name(file: &str) -> Option<u32> {
    let (restart, rest) = file.split_once(".log")?;
    let rotated = match rest {
        "" => true,
        _ => rest.strip_prefix('.').is_some_and(|ts| {
            !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        }),
    };
    rotated.then(|| parse_index(restart)).flatten()
}

/// `(namespace, pod, uid)`. Namespaces, pod names and uids hold no `_`.
fn split_pod_dir(dir: &str) -> Option<(&str, &str, &str)> {
    let mut parts = dir.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none() && !ns.is_empty() && !pod.is_empty() && !uid.is_empty();
    ok.then_some((ns, pod, uid))
}

/// The workload a pod belongs to, and its instance (see the module doc).
fn workload(pod: &str) -> (&str, u32) {
    if let Some((rest, suffix)) = pod.rsplit_once('-')
        && is_random_suffix(suffix)
        && let Some((name, hash)) = rest.rsplit_once('-')
        && is_template_hash(hash)
        && !name.is_empty()
    {
        return (name, 0);
    }
    if let Some((name, suffix)) = pod.rsplit_once('-')
        && is_random_suffix(suffix)
        && !suffix.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
    {
        let name = match name.rsplit_once('-') {
            Some((cron, minutes))
                if !cron.is_empty()
                    && minutes.len() >= 8
                    && minutes.bytes().all(|b| b.is_ascii_digit()) =>
            {
                cron
            }
            _ => name,
        };
        return (name, 0);
    }
    if let Some((name, ordinal)) = pod.rsplit_once('-')
        && let Some(ordinal) = parse_index(ordinal)
        && !name.is_empty()
    {
        return (name, ordinal);
    }
    (pod, 0)
}

fn is_random_suffix(s: &str) -> bool {
    s.len() == 5 && s.chars().all(|c| SUFFIX_ALPHABET.contains(c))
}

fn is_template_hash(s: &str) -> bool {
    (6..=10).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"bcdf".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const UID: &str = "8f1c2b4e-3a5d-4c6e-9f7a-1b2c3d4e5f60";

    /// `/var/log/pods` on a node running a StatefulSet pod that restarted
    /// once and had its first log rotated, a Deployment pod and a static pod.
    fn pods() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let files = [
            format!("default_web-0_{UID}/nginx/0.log"),
            format!("default_web-0_{UID}/nginx/1.log"),
            format!("default_web-0_{UID}/nginx/0.log.20251121-070700"),
            format!("default_web-0_{UID}/nginx/0.log.20251121-060000.gz"),
            format!("default_web-0_{UID}/nginx/0.log.20251121-070700.tmp"),
            format!("default_web-0_{UID}/istio-proxy/0.log"),
            "kube-system_coredns-5d78c9869d-8jx2p_2b7e1c4d-9f3a-4e6b-8c5d-7a1f2e3d4c5b/coredns/0.log".into(),
            "kube-system_kube-apiserver-node-1_0c9a8b7f6e5d4c3b2a1f0e9d8c7b6a5f/kube-apiserver/3.log"
                .into(),
        ];
        for file in files {
            let path = root.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "2025-11-21T07:07:00.123456789Z stdout F hello\n").unwrap();
        }
        root
    }

    #[test]
    fn identifies_statefulset_pods() {
        let dir = pods();
        let root = dir.path();
        let path = root.join(format!("default_web-0_{UID}/nginx/1.log"));
        assert_eq!(
            Kubernetes::default()
                .identify(root, &path)
                .unwrap()
                .unwrap(),
            Identity {
                job: "default/k8s/web".into(),
                instance: 0,
                task_id: UID.into(),
                run: 1,
                process: "nginx".into(),
                stream: Stream::Unspecified,
                labels: labels([("namespace", "default"), ("pod", "web-0"), ("uid", UID)]),
                multiline: None,
            }
        );
        let rotated = root.join(format!("default_web-0_{UID}/nginx/0.log.20251121-070700"));
        let id = Kubernetes::default()
            .identify(root, &rotated)
            .unwrap()
            .unwrap();
        assert_eq!((id.run, id.process.as_str()), (0, "nginx"));
        assert_eq!(
            Kubernetes::default().sandbox(root, &path),
            Some(root.join(format!("default_web-0_{UID}")))
        );
    }

    #[test]
    fn identifies_deployment_and_static_pods() {
        let dir = pods();
        let root = dir.path();
        let path = root.join(
            "kube-system_coredns-5d78c9869d-8jx2p_2b7e1c4d-9f3a-4e6b-8c5d-7a1f2e3d4c5b/coredns/0.log",
        );
        let id = Kubernetes::default()
            .identify(root, &path)
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.job.as_str(), id.instance),
            ("kube-system/k8s/coredns", 0)
        );
        assert_eq!(id.labels["pod"], "coredns-5d78c9869d-8jx2p");
        let path = root.join(
            "kube-system_kube-apiserver-node-1_0c9a8b7f6e5d4c3b2a1f0e9d8c7b6a5f/kube-apiserver/3.log",
        );
        let id = Kubernetes::default()
            .identify(root, &path)
            .unwrap()
            .unwrap();
        // A static pod's node suffix looks like an ordinal: read as one.
        assert_eq!(
            (id.job.as_str(), id.instance, id.run),
            ("kube-system/k8s/kube-apiserver-node", 1, 3)
        );
    }

    #[test]
    fn workloads_from_pod_names() {
        for (pod, name, instance) in [
            ("web-0", "web", 0),
            ("kafka-broker-12", "kafka-broker", 12),
            ("web-24567", "web", 24567),
            ("nginx-deployment-7c5ddbdf54-2xkq8", "nginx-deployment", 0),
            ("nginx-3837372172-x7k2p", "nginx", 0),
            ("fluent-bit-x7k2p", "fluent-bit", 0),
            ("backup-29392800-q8vzt", "backup", 0),
            ("migrate-db-4-hp2mx", "migrate-db-4", 0),
            ("etcd-master", "etcd-master", 0),
            ("web-01", "web-01", 0),
            ("web", "web", 0),
            ("-0", "-0", 0),
            ("-x7k2p", "-x7k2p", 0),
        ] {
            assert_eq!(workload(pod), (name, instance), "{pod}");
        }
    }

    #[test]
    fn other_files_are_not_logs() {
        let dir = pods();
        let root = dir.path();
        for rel in [
            format!("default_web-0_{UID}/nginx/0.log.20251121-060000.gz"),
            format!("default_web-0_{UID}/nginx/0.log.20251121-070700.tmp"),
            format!("default_web-0_{UID}/nginx/01.log"),
            format!("default_web-0_{UID}/nginx/x.log"),
            format!("default_web-0_{UID}/nginx/0.txt"),
            format!("default_web-0_{UID}/0.log"),
            format!("default_web-0_{UID}/nginx/../nginx/0.log"),
            format!("default_web-0_{UID}/../default_web-0_{UID}/0.log"),
            format!("default_web-0_{UID}/nginx/sub/0.log"),
        ] {
            assert_eq!(
                Kubernetes::default().identify(root, &root.join(&rel)),
                Ok(None),
                "{rel}"
            );
        }
    }

    #[test]
    fn malformed_pod_directories_are_errors() {
        let root = Path::new("/var/log/pods");
        for dir in ["web-0", "default_web-0", "default__uid", "a_b_c_d"] {
            let path = root.join(dir).join("nginx/0.log");
            let err = Kubernetes::default().identify(root, &path).unwrap_err();
            assert_eq!(err.path, path);
            assert_eq!(
                err.problem,
                format!("pod directory {dir:?} is not <namespace>_<pod>_<uid>")
            );
        }
    }

    #[test]
    fn hostile_names_are_sanitized() {
        let root = Path::new("/var/log/pods");
        let path = root.join(format!("..ns_we b;rm -rf_{UID}/c/0.log"));
        let id = Kubernetes::default()
            .identify(root, &path)
            .unwrap()
            .unwrap();
        assert_eq!(id.job, "..ns/k8s/we_b_rm_-rf");
        assert_eq!(id.labels["pod"], "we b;rm -rf");
        let path = root.join(format!(".._x_{UID}/c/0.log"));
        assert_eq!(
            Kubernetes::default()
                .identify(root, &path)
                .unwrap()
                .unwrap()
                .job,
            "__/k8s/x"
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_not_logs() {
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("/var/log/pods");
        let path = root
            .join(format!("default_web-0_{UID}"))
            .join(std::ffi::OsStr::from_bytes(b"ng\xffinx"))
            .join("0.log");
        assert_eq!(Kubernetes::default().identify(root, &path), Ok(None));
    }

    #[test]
    fn kind_framing_and_depth() {
        assert_eq!(Kubernetes::default().kind(), LayoutProto::Kubernetes);
        assert_eq!(Kubernetes::default().framing(), Framing::Cri);
        assert_eq!(Kubernetes::default().max_depth(), 2);
    }
}
