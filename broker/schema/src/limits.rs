//! Limits that keep one user from starving the rest: how many calls of one
//! kind (queries, Tail streams) a user may have running at once. A call over
//! its limit fails at once with `resource_exhausted`, and the message names
//! the limit, the user and how to change it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// Per-user counts of running calls of one kind.
#[derive(Debug, Clone)]
pub struct PerUser {
    /// What the limit is called in messages and flags: `queries`.
    what: &'static str,
    /// The flag that sets it: `--max-queries-per-user`.
    flag: &'static str,
    max: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// A running call; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    user: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl PerUser {
    /// At most `max` running calls per user (0: none at all).
    pub fn new(what: &'static str, flag: &'static str, max: usize) -> PerUser {
        PerUser {
            what,
            flag,
            max,
            running: Arc::default(),
        }
    }

    /// Running calls allowed per user, as given to [`PerUser::new`]; 0 refuses every call.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more call of `user`, or `resource_exhausted`.
    pub fn acquire(&self, user: &str) -> Result<Permit, Status> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let n = running.entry(user.to_string()).or_default();
        if *n >= self.max {
            return Err(Status::resource_exhausted(format!(
                "limit {}: user {user} already has {} {} running, the most one user may (set with {})",
                self.what, n, self.what, self.flag
            )));
        }
        *n += 1;
        Ok(Permit {
            user: user.to_string(),
            running: Arc::clone(&self.running),
        })
    }

    /// Calls of `user` running now.
    pub fn running(&self, user: &str) -> usize {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(user).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.user);
            }
        }
    }
}

/// A request over `max` bytes: `resource_exhausted` naming the limit.
pub fn check_size(what: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "limit {what}: {len} bytes is over the {max} bytes a request may carry"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_limit_is_refused_and_others_are_not() {
        let limit = PerUser::new("queries", "--max-queries-per-user", 2);
        let a = limit.acquire("alice").unwrap();
        let _b = limit.acquire("alice").unwrap();
        let err = limit.acquire("alice").unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            err.message(),
            "limit queries: user alice already has 2 queries running, the most one user may (set with --max-queries-per-user)"
        );
        let _bob = limit.acquire("bob").unwrap();
        drop(a);
        assert_eq!(limit.running("alice"), 1);
        let _c = limit.acquire("alice").unwrap();
    }

    #[test]
    fn sizes() {
        assert!(check_size("sql", 10, 10).is_ok());
        let err = check_size("sql", 11, 10).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("limit sql"), "{}", err.message());
    }
}
