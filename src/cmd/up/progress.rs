//! The line `sluice up` keeps under its tour: jobs, instances running,
//! lines shipped and archived, and how fresh the archive is. On a terminal
//! it is redrawn in place every second; otherwise a plain line is printed
//! every 30 seconds, so a log of `up`'s output stays readable.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use sluice_archiver::ArchiverMetrics;
use sluice_scheduler::scheduler::SchedulerService;
use sluice_scheduler::scheduler::service::now_unix_nanos;
use sluice_schema::pb::TaskState;
use tokio::sync::oneshot;

use crate::shared::node::NodeStatus;

/// Where the line's figures come from.
pub struct Progress {
    pub scheduler: SchedulerService,
    pub nodes: Vec<NodeStatus>,
    pub archiver: Arc<ArchiverMetrics>,
}

impl Progress {
    /// The line as it reads at `now` (Unix nanoseconds).
    pub fn line(&self, now: i64) -> String {
        let jobs = self.scheduler.with_core(|core| core.list(&|_| true));
        let live = jobs.iter().filter(|j| j.state != "killed").count();
        let (running, instances) = jobs
            .iter()
            .filter(|j| j.state != "killed")
            .flat_map(|j| &j.instances)
            .fold((0, 0), |(r, n), i| {
                (r + usize::from(i.state == TaskState::Running as i32), n + 1)
            });
        let shipped: u64 = self.nodes.iter().map(|n| n.metrics.lines_read.get()).sum();
        let archived = self.archiver.lines_archived.load(Relaxed);
        let last = self.archiver.last_commit_unix_nanos.load(Relaxed);
        let commit = if last == 0 {
            "no archive commit yet".to_string()
        } else {
            format!("last commit {}s ago", ((now - last).max(0)) / 1_000_000_000)
        };
        format!(
            "{live} jobs, {running}/{instances} instances running · {} lines shipped · {} archived, {commit}",
            thousands(shipped),
            thousands(archived)
        )
    }
}

/// `12345678` as `12,345,678`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The width of the terminal on standard error, if it is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a `winsize` and reads nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Prints the line until the returned sender fires (or is dropped); the
/// task ends the redrawn line with a newline before it returns.
pub fn spawn(
    progress: Progress,
    terminal: bool,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, mut stopped) = oneshot::channel();
    let every = Duration::from_secs(if terminal { 1 } else { 30 });
    let task = tokio::spawn(async move {
        let mut drawn = false;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(every) => {}
            }
            let mut line = progress.line(now_unix_nanos());
            let mut err = std::io::stderr().lock();
            if terminal {
                if let Some(width) = terminal_width() {
                    let cut = line
                        .char_indices()
                        .nth(width.saturating_sub(1))
                        .map(|(i, _)| i);
                    if let Some(cut) = cut {
                        line.truncate(cut);
                    }
                }
                let _ = write!(err, "\r\x1b[2K{line}");
                drawn = true;
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
        if drawn {
            let _ = writeln!(std::io::stderr());
        }
    });
    (stop, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
