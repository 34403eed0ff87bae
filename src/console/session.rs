//! Browser sessions: a random id (the cookie) for a token, kept in memory
//! only. A restarted console forgets its sessions: browsers log in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Live sessions at most; a login past it drops the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// How long a session lasts after its login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

pub(super) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    limit: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_limit(MAX_SESSIONS)
    }
}

struct Session {
    token: String,
    opened: Instant,
}

impl Sessions {
    fn with_limit(limit: usize) -> Sessions {
        Sessions {
            live: Mutex::default(),
            limit,
        }
    }

    /// A new session for `token`: its id, 256 random bits in hex.
    pub fn open(&self, token: &str) -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, s| s.opened.elapsed() < SESSION_TTL);
        if live.len() >= self.limit
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(
            id.clone(),
            Session {
                token: token.to_string(),
                opened: Instant::now(),
            },
        );
        id
    }

    /// The token of session `id`, while it lasts.
    pub fn token(&self, id: &str) -> Option<String> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.get(id) {
            Some(s) if s.opened.elapsed() < SESSION_TTL => Some(s.token.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id`; whether it was live.
    pub fn close(&self, id: &str) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_bounded_and_closed() {
        let sessions = Sessions::with_limit(3);
        let a = sessions.open("token-a");
        let b = sessions.open("token-a");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.token(&a).as_deref(), Some("token-a"));
        assert!(sessions.close(&a));
        assert_eq!(sessions.token(&a), None);
        assert!(!sessions.close(&a));
        assert_eq!(sessions.token("not-a-session"), None);
        for _ in 0..5 {
            sessions.open("t");
        }
        assert_eq!(sessions.live.lock().unwrap().len(), 3);
        // The oldest went first.
        assert_eq!(sessions.token(&b), None);
    }
}
