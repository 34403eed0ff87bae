//! The Kubernetes API server's view of a pod, for the optional mode of the
//! kubernetes layout (`[shipper.kubernetes_api]`, `sluice shipper
//! --kubernetes-api`): the pod's labels and its controller (owner
//! reference), which name the workload exactly where the pod name only
//! suggests it.
//!
//! One `GET /api/v1/namespaces/NS/pods/NAME` per pod, answered from a cache
//! after (keyed by the pod's uid, so a name reused by a new pod is asked
//! again). The service account token is read from its file for every call
//! (bound tokens rotate). The calls run on a thread of their own with its
//! own runtime, so the tracker (a plain thread) waits at most `timeout_ms`;
//! a pod the API does not answer for is identified from its name, as
//! without this mode, and that answer is kept for the pod's life so all its
//! files carry the same job.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

/// `[shipper.kubernetes_api]`: where the API server is and how to call it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesApi {
    /// `https://HOST:PORT` of the API server (in a pod:
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub url: String,
    /// The bearer token's file, read for every call.
    #[serde(default = "default_token_file")]
    pub token_file: PathBuf,
    /// The CA (PEM) the API server's certificate is checked against.
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Longest the tracker waits for one pod's answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Where a pod's service account token is mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn default_token_file() -> PathBuf {
    PathBuf::from(SERVICE_ACCOUNT_DIR).join("token")
}

fn default_ca_file() -> PathBuf {
    PathBuf::from(SERVICE_ACCOUNT_DIR).join("ca.crt")
}

fn default_timeout_ms() -> u64 {
    2_000
}

impl KubernetesApi {
    /// The in-cluster settings: the API server from the environment the
    /// kubelet gives every pod, the service account's token and CA.
    pub fn in_cluster() -> Result<KubernetesApi, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            "KUBERNETES_SERVICE_HOST is not set: not in a pod? give the API server's URL"
                .to_string()
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(KubernetesApi {
            url: format!("https://{host}:{port}"),
            token_file: default_token_file(),
            ca_file: default_ca_file(),
            timeout_ms: default_timeout_ms(),
        })
    }
}

/// What the API server says of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// `metadata.uid`: which pod of that name this is.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The controlling owner's kind and name (`ReplicaSet`, `web-7d9f8c6b5`).
    pub controller: Option<(String, String)>,
}

impl PodMeta {
    /// The workload: the controller's name, a ReplicaSet's without its
    /// pod-template hash (its Deployment), a CronJob's Job's without its
    /// schedule time; `None` for a pod with no controller.
    pub fn workload(&self) -> Option<String> {
        let (kind, name) = self.controller.as_ref()?;
        let strip = |suffix: Option<&str>| {
            suffix
                .and_then(|s| name.strip_suffix(s))
                .and_then(|n| n.strip_suffix('-'))
                .unwrap_or(name)
                .to_string()
        };
        Some(match kind.as_str() {
            "ReplicaSet" => strip(self.labels.get("pod-template-hash").map(String::as_str)),
            "Job" => match name.rsplit_once('-') {
                Some((base, time))
                    if time.len() >= 8 && time.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    base.to_string()
                }
                _ => name.clone(),
            },
            _ => name.clone(),
        })
    }

    /// A StatefulSet pod's ordinal, from the label the controller sets.
    pub fn ordinal(&self) -> Option<u32> {
        self.labels
            .get("apps.kubernetes.io/pod-index")?
            .parse()
            .ok()
    }
}

#[derive(Deserialize)]
struct Pod {
    metadata: Metadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

#[derive(Deserialize)]
struct OwnerReference {
    kind: String,
    name: String,
    #[serde(default)]
    controller: bool,
}

/// Parses a pod object as the API server returns it.
pub fn parse_pod(json: &[u8]) -> Result<PodMeta, String> {
    let pod: Pod = serde_json::from_slice(json).map_err(|e| format!("not a pod object: {e}"))?;
    let m = pod.metadata;
    let controller = m
        .owner_references
        .into_iter()
        .find(|o| o.controller)
        .map(|o| (o.kind, o.name));
    Ok(PodMeta {
        uid: m.uid,
        labels: m.labels,
        controller,
    })
}

struct Ask {
    namespace: String,
    pod: String,
    reply: mpsc::SyncSender<Result<Option<PodMeta>, String>>,
}

/// Pod lookups with a cache; see the module documentation.
pub struct PodApi {
    url: String,
    asks: Mutex<mpsc::Sender<Ask>>,
    cache: Mutex<HashMap<String, Option<Arc<PodMeta>>>>,
    timeout: Duration,
    /// Errors already logged, so a down API server is one line.
    warned: Mutex<Option<String>>,
}

impl std::fmt::Debug for PodApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodApi").field("url", &self.url).finish()
    }
}

impl PodApi {
    /// Reads the CA now (a missing or bad file is an error naming it) and
    /// starts the thread that calls the API server.
    pub fn start(config: &KubernetesApi) -> Result<PodApi, String> {
        let client = client::Client::new(config)?;
        let (tx, rx) = mpsc::channel::<Ask>();
        std::thread::Builder::new()
            .name("sluice-pod-api".into())
            .spawn(move || client.serve(rx))
            .map_err(|e| format!("cannot start the pod lookup thread: {e}"))?;
        Ok(PodApi {
            url: config.url.clone(),
            asks: Mutex::new(tx),
            cache: Mutex::new(HashMap::new()),
            timeout: Duration::from_millis(config.timeout_ms),
            warned: Mutex::new(None),
        })
    }

    /// The pod `namespace/pod` with uid `uid`, asked once per uid.
    pub fn lookup(&self, namespace: &str, pod: &str, uid: &str) -> Option<Arc<PodMeta>> {
        if let Some(known) = self.cache.lock().expect("pod cache").get(uid) {
            return known.clone();
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.asks.lock().expect("pod asks").send(Ask {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            reply,
        });
        let result = match sent {
            Ok(()) => answer
                .recv_timeout(self.timeout)
                .unwrap_or_else(|_| Err(format!("no answer in {:?}", self.timeout))),
            Err(_) => Err("the pod lookup thread has stopped".to_string()),
        };
        let meta = match result {
            Ok(Some(meta)) if meta.uid == uid => Some(Arc::new(meta)),
            // Deleted, or the name now belongs to another pod.
            Ok(_) => None,
            Err(e) => {
                let mut warned = self.warned.lock().expect("pod warned");
                if warned.as_deref() != Some(e.as_str()) {
                    tracing::warn!(api = %self.url, %namespace, %pod, error = %e, "kubernetes API: pod not looked up; its identity comes from its name");
                    *warned = Some(e);
                }
                None
            }
        };
        self.cache
            .lock()
            .expect("pod cache")
            .insert(uid.to_string(), meta.clone());
        meta
    }

    /// Forgets pods whose uid is not in `live` (called as sandboxes go).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.cache
            .lock()
            .expect("pod cache")
            .retain(|uid, _| live(uid));
    }
}

mod client {
    //! One HTTP/1.1 GET per pod over TLS, with hyper on a current-thread
    //! runtime of its own.

    use std::sync::Arc;
    use std::sync::mpsc;

    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    use super::{Ask, KubernetesApi, PodMeta, parse_pod};

    pub(super) struct Client {
        uri: hyper::Uri,
        token_file: std::path::PathBuf,
        tls: TlsConnector,
        timeout: std::time::Duration,
    }

    impl Client {
        pub(super) fn new(config: &KubernetesApi) -> Result<Client, String> {
            let uri: hyper::Uri = config
                .url
                .parse()
                .map_err(|e| format!("kubernetes_api.url {:?}: {e}", config.url))?;
            if uri.scheme_str() != Some("https") || uri.host().is_none() {
                return Err(format!(
                    "kubernetes_api.url {:?}: an https://HOST:PORT URL",
                    config.url
                ));
            }
            let pem = std::fs::read(&config.ca_file)
                .map_err(|e| format!("kubernetes_api.ca_file {}: {e}", config.ca_file.display()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!("kubernetes_api.ca_file {}: {e}", config.ca_file.display())
                })?;
                roots.add(cert).map_err(|e| {
                    format!("kubernetes_api.ca_file {}: {e}", config.ca_file.display())
                })?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "kubernetes_api.ca_file {}: no certificate in it",
                    config.ca_file.display()
                ));
            }
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let tls = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Client {
                uri,
                token_file: config.token_file.clone(),
                tls: TlsConnector::from(Arc::new(tls)),
                timeout: std::time::Duration::from_millis(config.timeout_ms),
            })
        }

        pub(super) fn serve(self, asks: mpsc::Receiver<Ask>) {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            while let Ok(ask) = asks.recv() {
                let got = runtime.block_on(async {
                    tokio::time::timeout(self.timeout, self.get(&ask.namespace, &ask.pod))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer in {:?}", self.timeout)))
                });
                let _ = ask.reply.send(got);
            }
        }

        async fn get(&self, namespace: &str, pod: &str) -> Result<Option<PodMeta>, String> {
            let token = std::fs::read_to_string(&self.token_file)
                .map_err(|e| format!("token file {}: {e}", self.token_file.display()))?;
            let host = self.uri.host().expect("checked in new");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = self.uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            tokio::spawn(connection);
            let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}");
            let request = hyper::Request::get(path)
                .header(
                    hyper::header::HOST,
                    self.uri.authority().expect("checked").as_str(),
                )
                .header(
                    hyper::header::AUTHORIZATION,
                    format!("Bearer {}", token.trim()),
                )
                .header(hyper::header::ACCEPT, "application/json")
                // One call per pod: the connection is not kept.
                .header(hyper::header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("HTTP body: {e}"))?
                .to_bytes();
            match status.as_u16() {
                200 => parse_pod(&body).map(Some),
                404 => Ok(None),
                code => Err(format!(
                    "{code}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The API server is a TLS server on loopback answering with the pod
    //! objects in `tests/fixtures/kubernetes-api` (see its README), and 401
    //! to any other token.

    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;

    use super::*;
    use crate::layout::Layout as _;
    use crate::layout::kubernetes::Kubernetes;

    const TOKEN: &str = "sa-token-0123456789";

    fn fixture(name: &str) -> &'static str {
        match name {
            "deployment" => include_str!("../../tests/fixtures/kubernetes-api/deployment-pod.json"),
            "statefulset" => {
                include_str!("../../tests/fixtures/kubernetes-api/statefulset-pod.json")
            }
            "cronjob" => include_str!("../../tests/fixtures/kubernetes-api/cronjob-pod.json"),
            _ => include_str!("../../tests/fixtures/kubernetes-api/not-found.json"),
        }
    }

    /// Serves the fixtures over TLS on loopback; returns its URL, the CA
    /// PEM and a count of requests.
    fn api_server() -> (String, String, Arc<AtomicUsize>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let certs = vec![cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
            signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let acceptor = acceptor.clone();
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(
                            move |request: hyper::Request<hyper::body::Incoming>| {
                                counted.fetch_add(1, Ordering::Relaxed);
                                let authorized = request
                                    .headers()
                                    .get(hyper::header::AUTHORIZATION)
                                    .is_some_and(|v| v == format!("Bearer {TOKEN}").as_str());
                                let path = request.uri().path().to_string();
                                async move {
                                    let (status, body) = if !authorized {
                                        (401, "{\"kind\":\"Status\",\"code\":401}")
                                    } else {
                                        match path.as_str() {
                                            "/api/v1/namespaces/web/pods/api-7d9f8c6b5-x2x4k" => {
                                                (200, fixture("deployment"))
                                            }
                                            "/api/v1/namespaces/payments/pods/ledger-2" => {
                                                (200, fixture("statefulset"))
                                            }
                                            "/api/v1/namespaces/ops/pods/report-29425680-q8z7w" => {
                                                (200, fixture("cronjob"))
                                            }
                                            _ => (404, fixture("missing")),
                                        }
                                    };
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        (url, cert.pem(), requests)
    }

    fn config(dir: &Path, url: &str, ca: &str, token: &str) -> KubernetesApi {
        std::fs::write(dir.join("ca.crt"), ca).unwrap();
        std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
        KubernetesApi {
            url: url.to_string(),
            token_file: dir.join("token"),
            ca_file: dir.join("ca.crt"),
            timeout_ms: 5_000,
        }
    }

    fn identify(layout: &Kubernetes, pod_dir: &str, container: &str) -> crate::layout::Identity {
        let root = Path::new("/var/log/pods");
        layout
            .identify(root, &root.join(pod_dir).join(container).join("0.log"))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_api_names_workloads_and_labels_pods() {
        let (url, ca, requests) = api_server();
        let dir = tempfile::tempdir().unwrap();
        let api = Arc::new(PodApi::start(&config(dir.path(), &url, &ca, TOKEN)).unwrap());
        let layout = Kubernetes::with_api(api);

        // A Deployment's pod: its name alone would give the same workload,
        // the API confirms it and adds the labels.
        let id = identify(
            &layout,
            "web_api-7d9f8c6b5-x2x4k_3f6a1e2c-9b1d-4c1e-8f4a-2d5b7c9e0a11",
            "app",
        );
        assert_eq!(id.job, "web/k8s/api");
        assert_eq!(id.labels["team"], "payments");
        assert_eq!(id.labels["app.kubernetes.io/name"], "api");
        assert_eq!(
            id.labels["pod"], "api-7d9f8c6b5-x2x4k",
            "the fixed labels stay"
        );
        // A StatefulSet's pod: the instance is its pod-index label.
        let id = identify(
            &layout,
            "payments_ledger-2_5b7d9f1a-2c4e-4a6b-8d0f-1e3a5c7e9b24",
            "db",
        );
        assert_eq!((id.job.as_str(), id.instance), ("payments/k8s/ledger", 2));
        // A CronJob's Job's pod: the name without the schedule time and the
        // random suffix.
        let id = identify(
            &layout,
            "ops_report-29425680-q8z7w_7c9e1a3b-5d7f-4c8e-9a1b-3c5e7a9c1d46",
            "report",
        );
        assert_eq!(id.job, "ops/k8s/report");
        // Asked once per pod: a second file of the same pod is answered
        // from the cache.
        let before = requests.load(Ordering::Relaxed);
        identify(
            &layout,
            "web_api-7d9f8c6b5-x2x4k_3f6a1e2c-9b1d-4c1e-8f4a-2d5b7c9e0a11",
            "sidecar",
        );
        assert_eq!(requests.load(Ordering::Relaxed), before);
        // A deleted pod, and a name now held by another pod (other uid):
        // read by its name.
        let id = identify(
            &layout,
            "web_gone-0_0f1e2d3c-0000-4000-8000-000000000001",
            "app",
        );
        assert_eq!((id.job.as_str(), id.instance), ("web/k8s/gone", 0));
        let id = identify(
            &layout,
            "payments_ledger-2_00000000-0000-4000-8000-00000000dead",
            "db",
        );
        assert!(
            !id.labels.contains_key("app"),
            "another pod's labels are not taken: {id:?}"
        );
    }

    #[test]
    fn a_refused_token_or_a_down_api_server_falls_back_to_the_pod_name() {
        let (url, ca, _) = api_server();
        let dir = tempfile::tempdir().unwrap();
        // The attacker's view: a stolen or revoked token is refused (401);
        // the shipper keeps shipping with the name's identity.
        let api = Arc::new(PodApi::start(&config(dir.path(), &url, &ca, "revoked")).unwrap());
        let layout = Kubernetes::with_api(api);
        let id = identify(
            &layout,
            "payments_ledger-2_5b7d9f1a-2c4e-4a6b-8d0f-1e3a5c7e9b24",
            "db",
        );
        assert_eq!((id.job.as_str(), id.instance), ("payments/k8s/ledger", 2));
        assert!(!id.labels.contains_key("app"));
        // Nothing listening: connection refused, within the timeout.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", closed.local_addr().unwrap());
        drop(closed);
        let api = Arc::new(PodApi::start(&config(dir.path(), &url, &ca, TOKEN)).unwrap());
        let started = std::time::Instant::now();
        let id = identify(
            &Kubernetes::with_api(api),
            "web_api-7d9f8c6b5-x2x4k_3f6a1e2c-9b1d-4c1e-8f4a-2d5b7c9e0a11",
            "app",
        );
        assert_eq!(id.job, "web/k8s/api");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(
            dir.path(),
            "https://127.0.0.1:1",
            "not a certificate",
            TOKEN,
        );
        let err = PodApi::start(&c).unwrap_err();
        assert!(
            err.contains("ca_file") && err.contains("no certificate"),
            "{err}"
        );
        c.url = "http://127.0.0.1:1".into();
        let err = PodApi::start(&c).unwrap_err();
        assert!(err.contains("kubernetes_api.url"), "{err}");
        c.ca_file = dir.path().join("missing.crt");
        c.url = "https://127.0.0.1:1".into();
        let err = PodApi::start(&c).unwrap_err();
        assert!(err.contains("missing.crt"), "{err}");
    }

    #[test]
    fn workloads_come_from_the_controller() {
        let meta = |kind: &str, name: &str, labels: &[(&str, &str)]| PodMeta {
            uid: "u".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            controller: Some((kind.into(), name.into())),
        };
        assert_eq!(
            meta("ReplicaSet", "web-5f7c9", &[("pod-template-hash", "5f7c9")])
                .workload()
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            meta("ReplicaSet", "bare-rs", &[]).workload().as_deref(),
            Some("bare-rs")
        );
        assert_eq!(
            meta("Job", "nightly-29425680", &[]).workload().as_deref(),
            Some("nightly")
        );
        assert_eq!(
            meta("Job", "migrate-v2", &[]).workload().as_deref(),
            Some("migrate-v2")
        );
        assert_eq!(
            meta("DaemonSet", "fluent", &[]).workload().as_deref(),
            Some("fluent")
        );
        assert_eq!(PodMeta::default().workload(), None);
        assert!(parse_pod(b"{\"kind\":\"Status\"}").is_err());
    }
}
