//! The node directory: every shipper (standalone, or the one inside
//! `sluice node` and `sluice up`) registers with the admin service and
//! heartbeats what it holds, so `tailll` finds a job's nodes where no Sluice
//! scheduler places them, and `sluice status` lists the shippers.
//!
//! Held in the admin service's memory: after a restart of `sluice up` the
//! directory fills again within one heartbeat interval. A registration is
//! trusted as far as its token: the caller must be allowed to write every
//! role it reports a job of (a shipper ships those logs anyway), so a
//! token of one role cannot claim another role's job and point `tailll` at
//! its own endpoint; and a host registered by one user is not taken over by
//! another (but an admin) until it has gone stale.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use sluice_schema::auth::Principal;
use sluice_schema::glob::JobGlob;
use sluice_schema::pb::{ShipperHeartbeat, ShipperInfo};
use tonic::Status;

/// How often shippers are asked to heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// The default silence after which a shipper is shown stale.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15);
/// A stale shipper is forgotten after this much more silence.
const FORGET_AFTER_STALE: u32 = 40;
/// At most this many jobs in one heartbeat.
const MAX_JOBS: usize = 10_000;
/// At most this many shippers in the directory.
const MAX_SHIPPERS: usize = 10_000;
/// The layouts a shipper may report.
const LAYOUTS: [&str; 6] = [
    "native",
    "thermos",
    "mesos",
    "kubernetes",
    "docker",
    "nomad",
];

struct Entry {
    heartbeat: ShipperHeartbeat,
    last_unix_nanos: i64,
    user: String,
}

/// The shippers the admin service has heard from, by host.
pub struct Directory {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// When long-silent shippers were last forgotten.
    swept_unix_nanos: Mutex<i64>,
    stale_after: Duration,
}

/// What a heartbeat changed, for the audit trail: a new registration or a
/// changed endpoint or restart is recorded, a repeated heartbeat is not.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    New,
    Changed,
    Same,
}

impl Directory {
    pub fn new(stale_after: Duration) -> Directory {
        Directory {
            entries: Mutex::new(BTreeMap::new()),
            swept_unix_nanos: Mutex::new(0),
            stale_after,
        }
    }

    fn is_stale(&self, last_unix_nanos: i64, now: i64) -> bool {
        now.saturating_sub(last_unix_nanos) > self.stale_after.as_nanos() as i64
    }

    /// Records `heartbeat` from `caller` at `now`, or says why not.
    pub fn heartbeat(
        &self,
        caller: &Principal,
        heartbeat: ShipperHeartbeat,
        now: i64,
    ) -> Result<Registered, Status> {
        validate(&heartbeat)?;
        for job in &heartbeat.jobs {
            let role = job.job.split('/').next().unwrap_or_default();
            if !caller.may_write(role) {
                return Err(Status::permission_denied(format!(
                    "user {:?} may not write role {role:?}, so may not register a shipper holding job {:?}",
                    caller.user, job.job
                )));
            }
        }
        let mut entries = self.entries.lock().expect("directory lock");
        // Long-silent shippers are forgotten, in a sweep at most once a
        // stale period (not on every heartbeat of every shipper).
        let mut swept = self.swept_unix_nanos.lock().expect("directory sweep");
        if now.saturating_sub(*swept) >= self.stale_after.as_nanos() as i64 {
            let forget = (self.stale_after * FORGET_AFTER_STALE).as_nanos() as i64;
            entries.retain(|_, e| now.saturating_sub(e.last_unix_nanos) <= forget);
            *swept = now;
        }
        drop(swept);
        let registered = match entries.get(&heartbeat.host) {
            None => Registered::New,
            Some(old) => {
                if old.user != caller.user
                    && !caller.is_admin()
                    && !self.is_stale(old.last_unix_nanos, now)
                {
                    return Err(Status::permission_denied(format!(
                        "host {:?} is registered by user {:?}; another user may take it over once it is stale ({} s without a heartbeat)",
                        heartbeat.host,
                        old.user,
                        self.stale_after.as_secs()
                    )));
                }
                let h = &old.heartbeat;
                if old.user != caller.user
                    || h.tail_endpoint != heartbeat.tail_endpoint
                    || h.started_unix_nanos != heartbeat.started_unix_nanos
                    || h.layout != heartbeat.layout
                {
                    Registered::Changed
                } else {
                    Registered::Same
                }
            }
        };
        if registered == Registered::New && entries.len() >= MAX_SHIPPERS {
            return Err(Status::resource_exhausted(format!(
                "the directory holds {MAX_SHIPPERS} shippers already"
            )));
        }
        entries.insert(
            heartbeat.host.clone(),
            Entry {
                heartbeat,
                last_unix_nanos: now,
                user: caller.user.clone(),
            },
        );
        Ok(registered)
    }

    /// The shippers holding a job matching `glob`, each with only the jobs
    /// `caller` may read; a shipper left with none is not listed, except
    /// to an admin (who sees every shipper, jobs or not, when `glob` is
    /// `None`).
    pub fn list(&self, caller: &Principal, glob: Option<&JobGlob>, now: i64) -> Vec<ShipperInfo> {
        let entries = self.entries.lock().expect("directory lock");
        entries
            .values()
            .filter_map(|e| {
                let mut heartbeat = e.heartbeat.clone();
                heartbeat.jobs.retain(|j| {
                    let role = j.job.split('/').next().unwrap_or_default();
                    caller.may_read(role) && glob.is_none_or(|g| g.matches(&j.job))
                });
                let shown = !heartbeat.jobs.is_empty() || (caller.is_admin() && glob.is_none());
                shown.then(|| self.info(e, heartbeat, now))
            })
            .collect()
    }

    /// The shippers for `sluice status`, as [`Self::list`] shows them.
    pub fn to_json(&self, caller: &Principal, now: i64) -> serde_json::Value {
        let shippers: Vec<serde_json::Value> = self
            .list(caller, None, now)
            .into_iter()
            .map(|info| {
                let h = info.heartbeat.unwrap_or_default();
                let jobs: Vec<serde_json::Value> = h
                    .jobs
                    .iter()
                    .map(|j| {
                        serde_json::json!({
                            "job": j.job,
                            "sources": j.sources,
                            "instances": j.instances,
                            "lag_bytes": j.lag_bytes,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "host": h.host,
                    "layout": h.layout,
                    "tail": h.tail_endpoint,
                    "files": h.files_tracked,
                    "lines_shipped": h.lines_shipped,
                    "lag_bytes": h.lag_bytes,
                    "version": h.version,
                    "user": info.user,
                    "last_heartbeat_unix_nanos": info.last_heartbeat_unix_nanos,
                    "stale": info.stale,
                    "jobs": jobs,
                })
            })
            .collect();
        serde_json::Value::Array(shippers)
    }

    /// Every shipper, jobs and all (for `/metrics`, which is not per user).
    pub fn snapshot(&self, now: i64) -> Vec<ShipperInfo> {
        let entries = self.entries.lock().expect("directory lock");
        entries
            .values()
            .map(|e| self.info(e, e.heartbeat.clone(), now))
            .collect()
    }

    /// `e` as listed, with `heartbeat` (its jobs perhaps filtered).
    fn info(&self, e: &Entry, heartbeat: ShipperHeartbeat, now: i64) -> ShipperInfo {
        ShipperInfo {
            stale: self.is_stale(e.last_unix_nanos, now),
            last_heartbeat_unix_nanos: e.last_unix_nanos,
            user: e.user.clone(),
            heartbeat: Some(heartbeat),
        }
    }
}

/// Refuses a heartbeat that names no host, an unknown layout, an endpoint
/// that is not a URL, or a job that is not `role/env/name`.
fn validate(h: &ShipperHeartbeat) -> Result<(), Status> {
    let bad = |what: String| Err(Status::invalid_argument(what));
    if h.host.is_empty()
        || h.host.len() > 253
        || !h
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return bad(format!(
            "host {:?}: 1 to 253 letters, digits, '-', '_' or '.'",
            h.host
        ));
    }
    if !LAYOUTS.contains(&h.layout.as_str()) {
        return bad(format!(
            "layout {:?}: one of {}",
            h.layout,
            LAYOUTS.join(", ")
        ));
    }
    if !(h.tail_endpoint.is_empty()
        || h.tail_endpoint.starts_with("https://")
        || h.tail_endpoint.starts_with("http://"))
        || h.tail_endpoint.len() > 2048
    {
        return bad(format!(
            "tail_endpoint {:?}: an http(s):// URL, or empty",
            h.tail_endpoint
        ));
    }
    if h.jobs.len() > MAX_JOBS {
        return bad(format!(
            "{} jobs in one heartbeat, at most {MAX_JOBS}",
            h.jobs.len()
        ));
    }
    for job in &h.jobs {
        let parts: Vec<&str> = job.job.split('/').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) || job.job.len() > 512 {
            return bad(format!("job {:?}: not role/env/name", job.job));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_schema::pb::ShipperJob;

    use super::*;

    fn principal(user: &str, roles: &[&str]) -> Principal {
        Principal::new(user, roles.iter().copied(), Vec::<String>::new())
    }

    fn heartbeat(host: &str, jobs: &[&str]) -> ShipperHeartbeat {
        ShipperHeartbeat {
            host: host.into(),
            layout: "kubernetes".into(),
            tail_endpoint: format!("https://{host}:7000"),
            jobs: jobs
                .iter()
                .map(|j| ShipperJob {
                    job: j.to_string(),
                    sources: 1,
                    instances: vec![0],
                    lag_bytes: 0,
                })
                .collect(),
            started_unix_nanos: 1,
            ..Default::default()
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_token_registers_only_jobs_of_roles_it_may_write() {
        let dir = Directory::new(DEFAULT_STALE_AFTER);
        let web = principal("web-shipper", &["web"]);
        assert_eq!(
            dir.heartbeat(&web, heartbeat("n1", &["web/prod/api"]), S)
                .unwrap(),
            Registered::New
        );
        assert_eq!(
            dir.heartbeat(&web, heartbeat("n1", &["web/prod/api"]), 2 * S)
                .unwrap(),
            Registered::Same
        );
        // The attacker: a web token claiming a payments job, to point
        // tailll of payments at its own endpoint.
        let err = dir
            .heartbeat(&web, heartbeat("n2", &["payments/prod/ledger"]), 2 * S)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("payments"), "{}", err.message());
        let admin = principal("admin", &["*"]);
        let all = dir.list(&admin, None, 3 * S);
        assert_eq!(all.len(), 1, "the refused heartbeat registered nothing");
    }

    #[test]
    fn a_host_is_not_taken_over_by_another_user_until_stale() {
        let dir = Directory::new(Duration::from_secs(15));
        let a = principal("a", &["web"]);
        let b = principal("b", &["web"]);
        dir.heartbeat(&a, heartbeat("n1", &["web/prod/api"]), S)
            .unwrap();
        let err = dir
            .heartbeat(&b, heartbeat("n1", &["web/prod/api"]), 2 * S)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            dir.heartbeat(&b, heartbeat("n1", &["web/prod/api"]), 20 * S)
                .unwrap(),
            Registered::Changed
        );
    }

    #[test]
    fn listing_is_scoped_to_readable_roles_and_marks_stale_shippers() {
        let dir = Directory::new(Duration::from_secs(15));
        let admin = principal("admin", &["*"]);
        dir.heartbeat(&admin, heartbeat("n1", &["web/prod/api", "db/prod/pg"]), S)
            .unwrap();
        dir.heartbeat(&admin, heartbeat("n2", &["db/prod/pg"]), 10 * S)
            .unwrap();
        dir.heartbeat(&admin, heartbeat("n3", &[]), 10 * S).unwrap();
        let web = principal("web", &["web"]);
        let seen = dir.list(&web, None, 20 * S);
        assert_eq!(seen.len(), 1);
        let n1 = seen[0].heartbeat.as_ref().unwrap();
        assert_eq!(n1.host, "n1");
        assert_eq!(n1.jobs.len(), 1, "the db job is hidden from a web token");
        assert!(seen[0].stale, "19 s without a heartbeat");
        let all = dir.list(&admin, None, 20 * S);
        assert_eq!(all.len(), 3, "an admin sees every shipper");
        assert!(!all[1].stale);
        let glob = JobGlob::parse("db/*").unwrap();
        let db: Vec<String> = dir
            .list(&admin, Some(&glob), 20 * S)
            .into_iter()
            .map(|i| i.heartbeat.unwrap().host)
            .collect();
        assert_eq!(db, ["n1", "n2"]);
    }

    #[test]
    fn long_silent_shippers_are_forgotten() {
        let dir = Directory::new(Duration::from_secs(1));
        let admin = principal("admin", &["*"]);
        dir.heartbeat(&admin, heartbeat("old", &[]), S).unwrap();
        dir.heartbeat(&admin, heartbeat("new", &[]), 30 * S)
            .unwrap();
        assert_eq!(dir.snapshot(30 * S).len(), 2, "stale, not yet forgotten");
        dir.heartbeat(&admin, heartbeat("new", &[]), 45 * S)
            .unwrap();
        let hosts: Vec<String> = dir
            .snapshot(45 * S)
            .into_iter()
            .map(|i| i.heartbeat.unwrap().host)
            .collect();
        assert_eq!(hosts, ["new"], "silent for 44 s, 40 stale periods");
    }

    #[test]
    fn bad_heartbeats_name_what_is_wrong() {
        let dir = Directory::new(DEFAULT_STALE_AFTER);
        let admin = principal("admin", &["*"]);
        for (h, want) in [
            (heartbeat("", &[]), "host"),
            (heartbeat("a b", &[]), "host"),
            (
                ShipperHeartbeat {
                    layout: "lxc".into(),
                    ..heartbeat("n1", &[])
                },
                "layout",
            ),
            (
                ShipperHeartbeat {
                    tail_endpoint: "ftp://x".into(),
                    ..heartbeat("n1", &[])
                },
                "tail_endpoint",
            ),
            (heartbeat("n1", &["web/api"]), "role/env/name"),
            // A flood: more jobs than one heartbeat may carry.
            (
                heartbeat("n1", &vec!["web/prod/x"; MAX_JOBS + 1]),
                "jobs in one heartbeat",
            ),
        ] {
            let err = dir.heartbeat(&admin, h, S).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains(want), "{}", err.message());
        }
    }
}
