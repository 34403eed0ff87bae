//! TLS for every service: the server's certificate and key, and the local
//! CA that `sluice up` and `sluice scheduler` make.
//!
//! A server uses `--tls-cert`/`--tls-key` when given (a team's own CA; see
//! the README). Otherwise it takes a certificate from the data directory's
//! local CA (`DATA_DIR/tls/ca.pem`, key `ca.key`, mode 0600): `up` and
//! `scheduler` create that CA on first start and put its certificate in
//! `client.toml`; a `node` or `shipper` sharing the data directory uses it.
//! Issued certificates name `localhost`, the host name, the loopback
//! addresses and the address the server listens on (every local address
//! when it listens on all of them), so clients check the name they dial.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::shared::write_private;

/// The server's certificate, for the services that serve.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The server's certificate chain (PEM) [default: one issued by the data
    /// directory's local CA].
    #[arg(
        long,
        env = "SLUICE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(
        long,
        env = "SLUICE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// A server's certificate chain and key, PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `cert` and `key`, checking that rustls takes them.
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<ServerTls> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the TLS {what} {}", path.display()))
        };
        let tls = ServerTls {
            cert_pem: read(cert, "certificate")?,
            key_pem: read(key, "key")?,
        };
        tls.acceptor().with_context(|| {
            format!(
                "the TLS certificate {} and key {} cannot be used",
                cert.display(),
                key.display()
            )
        })?;
        Ok(tls)
    }

    /// The tonic server configuration.
    pub fn tonic(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(std::time::Duration::from_secs(10))
    }

    /// A rustls acceptor for HTTP/1 (the metrics endpoint).
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("invalid certificate PEM")?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in the PEM");
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).context("invalid key PEM")?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("certificate and key do not fit")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Makes ring rustls's crypto provider (once per process, before any TLS).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA of a data directory.
pub struct LocalCa {
    /// Its certificate, PEM: what clients trust.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// `DATA_DIR/tls`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

impl LocalCa {
    /// The data directory's CA; with `create`, made when there is none.
    pub fn open(data_dir: &Path, create: bool) -> anyhow::Result<Option<LocalCa>> {
        let dir = dir(data_dir);
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("failed to read {}", cert_path.display()))?;
            let key_pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("failed to read {}", key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem)
                .with_context(|| format!("invalid CA key {}", key_path.display()))?;
            return Ok(Some(LocalCa {
                cert_pem,
                issuer: Issuer::new(ca_params(&key), key),
            }));
        }
        if !create {
            return Ok(None);
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let key = KeyPair::generate().context("failed to make the CA key")?;
        let mut params = ca_params(&key);
        validity(&mut params);
        params.serial_number = Some(serial());
        let cert = params
            .self_signed(&key)
            .context("failed to make the CA certificate")?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &cert.pem())?;
        tracing::info!(ca = %cert_path.display(), "made a local CA");
        Ok(Some(LocalCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(ca_params(&key), key),
        }))
    }

    /// A server certificate for `listen`: `localhost`, the host name, the
    /// loopback addresses and the listening address (every local address
    /// when it is unspecified), and `extra_names`.
    pub fn issue(&self, listen: IpAddr, extra_names: &[String]) -> anyhow::Result<ServerTls> {
        let host = hostname();
        let mut names = vec!["localhost".to_string()];
        names.extend(host.iter().cloned());
        names.extend(extra_names.iter().cloned());
        names.sort();
        names.dedup();
        let mut params = CertificateParams::new(names).context("invalid certificate name")?;
        let mut ips = vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        if listen.is_unspecified() {
            ips.extend(local_addresses());
        } else {
            ips.push(listen);
        }
        ips.sort();
        ips.dedup();
        params
            .subject_alt_names
            .extend(ips.into_iter().map(SanType::IpAddress));
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            host.as_deref().unwrap_or("sluice").to_string(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        params.serial_number = Some(serial());
        let key = KeyPair::generate().context("failed to make a server key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("failed to sign a server certificate")?;
        Ok(ServerTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The TLS of a server listening on `listen`: `--tls-cert`/`--tls-key`, or
/// a certificate from the data directory's local CA (made when `create_ca`).
/// Returns the CA's certificate too when the local CA issued it.
pub fn server(
    args: &TlsArgs,
    data_dir: &Path,
    listen: IpAddr,
    create_ca: bool,
) -> anyhow::Result<(ServerTls, Option<String>)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok((ServerTls::from_files(cert, key)?, None));
    }
    let ca = LocalCa::open(data_dir, create_ca)?.with_context(|| {
        format!(
            "no TLS certificate: pass --tls-cert and --tls-key (see the README's \"Bring your own CA\"), or share the data directory of a `sluice up` or `sluice scheduler` (its CA is in {})",
            dir(data_dir).display()
        )
    })?;
    let tls = ca.issue(listen, &[])?;
    Ok((tls, Some(ca.cert_pem)))
}

/// The CA's certificate parameters; its name carries a digest of its key,
/// so that two data directories' CAs never share a name (a client then
/// says "unknown issuer" of the other's certificates).
fn ca_params(key: &KeyPair) -> CertificateParams {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.public_key_raw());
    let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Sluice local CA {id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.is_ascii())
}

/// Every address of this machine's interfaces.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is freed below; each entry's
    // address is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut entry = list;
        while !entry.is_null() {
            let addr = (*entry).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// Where a server listens: the address it reports to clients. An
/// unspecified address is reported as loopback (what the certificate names
/// first).
pub fn reported(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_ca_is_made_once_and_issues_certificates_rustls_takes() {
        install_provider();
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalCa::open(dir.path(), false).unwrap().is_none());
        let ca = LocalCa::open(dir.path(), true).unwrap().unwrap();
        let again = LocalCa::open(dir.path(), false).unwrap().unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tls/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let tls = again.issue(IpAddr::V4(Ipv4Addr::LOCALHOST), &[]).unwrap();
        tls.acceptor().unwrap();
        let err = server(
            &TlsArgs::default(),
            &tempfile::tempdir().unwrap().path().join("x"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--tls-cert"), "{err}");
    }
}
