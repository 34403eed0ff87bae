//! The token file of a server: read at start, then read again when it
//! changes (checked every second) and on SIGHUP, so that a token removed
//! from it is refused within seconds, by every service of the process,
//! without a restart. A file that no longer parses is reported and the
//! tokens in force stay in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sluice_schema::auth::{self, TokenStore, Tokens};

use crate::shared::client::ClientFile;
use crate::shared::write_private;

/// How often the file is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Reads the token file at `path`.
pub fn read(path: &Path) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the token file {}", path.display()))?;
    Tokens::parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Reads the token file and keeps the returned store up to date with it
/// (for as long as the process runs).
pub fn load_and_watch(path: &Path) -> anyhow::Result<TokenStore> {
    // Taken before the read: a change made after it is seen.
    let seen = fingerprint(path);
    let store = TokenStore::new(read(path)?);
    watch(path.to_path_buf(), store.clone(), seen);
    Ok(store)
}

/// What tells a changed file from the one read: modification time, size
/// and inode (an editor's rename gives a new inode).
fn fingerprint(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Reloads `path` into `store` when it changes from `seen` and on SIGHUP.
fn watch(path: PathBuf, store: TokenStore, mut seen: Option<(std::time::SystemTime, u64, u64)>) {
    tokio::spawn(async move {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: the token file is reloaded only when it changes");
                None
            }
        };
        loop {
            let forced = tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = fingerprint(&path);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match read(&path) {
                Ok(tokens) => {
                    tracing::info!(file = %path.display(), tokens = tokens.len(), sighup = forced, "token file reloaded");
                    store.replace(tokens);
                }
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "token file not reloaded; the tokens in force stay"
                ),
            }
        }
    });
}

/// Who may call a node's (or a lone shipper's) services: `path`, else
/// `DATA_DIR/tokens.toml`, kept up to date with the file. `needs` says what
/// needs it, for the error.
pub fn read_tokens(
    path: Option<&PathBuf>,
    data_dir: &std::path::Path,
    needs: &str,
) -> anyhow::Result<TokenStore> {
    let path = path
        .cloned()
        .unwrap_or_else(|| data_dir.join("tokens.toml"));
    crate::shared::tokens::load_and_watch(&path)
        .with_context(|| format!("{needs} a token file (pass --tokens FILE)"))
}

/// The admin token: kept across restarts in `client.toml`, registered
/// (hashed) in `tokens.toml`, which operators may extend with more users.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let tokens_path = data_dir.join("tokens.toml");
    let previous = ClientFile::read(data_dir).ok().flatten().map(|c| c.token);
    if !tokens_path.exists() {
        let token = previous.clone().unwrap_or_else(new_token);
        write_private(
            &tokens_path,
            &auth::token_file_entry("admin", &token, &[auth::ANY_ROLE]),
        )?;
    }
    let text = std::fs::read_to_string(&tokens_path)
        .with_context(|| format!("failed to read {}", tokens_path.display()))?;
    let tokens = Tokens::parse(&text).with_context(|| format!("in {}", tokens_path.display()))?;
    match previous.filter(|t| tokens.authenticate(t).is_some_and(|p| p.is_admin())) {
        Some(token) => Ok(token),
        None => {
            // client.toml lost or stale: add a fresh admin token.
            let token = new_token();
            let entry = auth::token_file_entry("admin", &token, &[auth::ANY_ROLE]);
            write_private(&tokens_path, &format!("{text}\n{entry}"))?;
            Ok(token)
        }
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_schema::auth::token_file_entry;

    #[tokio::test]
    async fn a_removed_token_is_refused_within_seconds_and_a_broken_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let alice = token_file_entry("alice", "alice-token-0123456789", &["www"]);
        let bob = token_file_entry("bob", "bob-token-0123456789ab", &["db"]);
        std::fs::write(&path, format!("{alice}\n{bob}")).unwrap();
        let store = load_and_watch(&path).unwrap();
        assert!(store.authenticate("bob-token-0123456789ab").is_some());

        std::fs::write(&path, &alice).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.authenticate("bob-token-0123456789ab").is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "bob's token still works"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(store.authenticate("alice-token-0123456789").is_some());

        std::fs::write(&path, "[[tokens]\nbroken").unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(store.authenticate("alice-token-0123456789").is_some());
    }
}
