//! What the commands share, in one place: flags ([`args`]), finding and
//! reaching a cluster ([`client`]), serving ([`serve`], [`tls`],
//! [`tokens`]), the pieces `sluice up` and the single-purpose commands both
//! run ([`node`], [`archiving`], [`admin`], [`metrics_http`]), the process's
//! own log ([`logs`]) and output for people ([`format`](mod@format)). Nothing here uses
//! a command module; commands use these.

pub mod admin;
pub mod archiving;
pub mod args;
pub mod client;
pub mod directory;
pub mod format;
pub mod logs;
pub mod metrics_http;
pub mod node;
pub mod otlp;
pub mod register;
pub mod serve;
pub mod sql;
pub mod tls;
pub mod tokens;

/// Writes `text` to `path` readable by its owner only (mode 0600), synced:
/// keys, tokens and the CA.
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
