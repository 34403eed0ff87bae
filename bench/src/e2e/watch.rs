//! What the bench watches while the load runs: CPU per thread of `sluice
//! up`, and the catalog (when each commit made lines queryable).

use super::*;

/// The CPU each thread of a process used since `start`, sampled: a
/// thread that ends between samples keeps what it had at the last one.
pub(super) struct Threads {
    pid: u32,
    start: HashMap<u32, Duration>,
    last: HashMap<u32, (String, Duration)>,
}

impl Threads {
    pub(super) fn start(pid: u32) -> Threads {
        let last = Threads::read(pid);
        let start = last.iter().map(|(tid, (_, cpu))| (*tid, *cpu)).collect();
        Threads { pid, start, last }
    }

    pub(super) fn sample(&mut self) {
        self.last.extend(Threads::read(self.pid));
    }

    /// CPU seconds by thread name (digits and a trailing `-` dropped, as
    /// `sluice-tracker` for every node's tracker).
    pub(super) fn by_name(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (tid, (name, cpu)) in &self.last {
            let spent = cpu.saturating_sub(self.start.get(tid).copied().unwrap_or_default());
            if !spent.is_zero() {
                *out.entry(name.clone()).or_default() += spent.as_secs_f64();
            }
        }
        out
    }

    /// Thread id → (name, CPU so far).
    pub(super) fn read(pid: u32) -> HashMap<u32, (String, Duration)> {
        let mut out = HashMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out;
        };
        for task in tasks.flatten() {
            let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close]
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == ' ')
                .to_string();
            out.insert(tid, (name, stat_cpu(&stat)));
        }
        out
    }
}

/// Follows the archive's catalog: when each line range became visible.
pub(super) struct Watcher {
    state: Arc<Mutex<Watched>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub(super) struct Watched {
    /// source → archived `[start, end)` ranges, each with when the bench
    /// saw its commit (ns) and the commit's own time (ms).
    ranges: HashMap<u64, Vec<(u64, u64, i64, u64)>>,
    /// source → bytes archived.
    covered: HashMap<u64, u64>,
    /// source → commits that archived lines of it.
    commits: HashMap<u64, HashSet<u64>>,
    error: Option<String>,
}

impl Watcher {
    pub(super) async fn start(store: &Store) -> anyhow::Result<Watcher> {
        let mut catalog = Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs)
            .await
            .context("failed to open the archive's catalog")?;
        let state = Arc::new(Mutex::new(Watched::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let before = catalog.version();
                let commits = match catalog.refresh().await {
                    Ok(0) => continue,
                    Ok(_) => catalog.commits_since(before).await,
                    Err(e) => Err(e),
                };
                let seen = now_nanos();
                let mut w = shared.lock().expect("not poisoned");
                match commits {
                    Ok(commits) => {
                        for commit in commits {
                            for (source, ranges) in &commit.archived {
                                for (start, end) in ranges.iter() {
                                    w.ranges.entry(*source).or_default().push((
                                        start,
                                        end,
                                        seen,
                                        commit.created_unix_ms,
                                    ));
                                    *w.covered.entry(*source).or_default() += end - start;
                                }
                                w.commits.entry(*source).or_default().insert(commit.version);
                            }
                        }
                    }
                    Err(e) => w.error = Some(e.to_string()),
                }
            }
        });
        Ok(Watcher { state, task })
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }

    /// Sources archived so far.
    pub(super) fn sources(&self) -> HashSet<u64> {
        self.state
            .lock()
            .expect("not poisoned")
            .covered
            .keys()
            .copied()
            .collect()
    }

    /// Bytes archived of the sources not in `known`.
    pub(super) fn covered(&self, known: &HashSet<u64>) -> u64 {
        let w = self.state.lock().expect("not poisoned");
        if let Some(e) = &w.error {
            tracing::warn!(error = %e, "reading the catalog");
        }
        w.covered
            .iter()
            .filter(|(s, _)| !known.contains(s))
            .map(|(_, b)| b)
            .sum()
    }

    /// Commits that archived lines of the sources not in `known`.
    pub(super) fn commits(&self, known: &HashSet<u64>) -> u64 {
        let w = self.state.lock().expect("not poisoned");
        let mut all = HashSet::new();
        for (source, commits) in &w.commits {
            if !known.contains(source) {
                all.extend(commits.iter().copied());
            }
        }
        all.len() as u64
    }

    /// When the line of `source` at `offset` was seen queryable (ns) and
    /// its commit's time (ms).
    pub(super) fn when(&self, source: u64, offset: u64) -> Option<(i64, u64)> {
        let w = self.state.lock().expect("not poisoned");
        w.ranges
            .get(&source)?
            .iter()
            .find(|(start, end, _, _)| (*start..*end).contains(&offset))
            .map(|(_, _, seen, commit)| (*seen, *commit))
    }
}
