//! Flags several commands share.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// How a node confines its tasks (docs/SECURITY.md).
#[derive(Args, Debug, Clone, Default)]
pub struct TaskArgs {
    /// Run tasks unconfined where Landlock is missing, instead of refusing
    /// to start them (a task could then read the node's tokens).
    #[arg(long)]
    pub insecure_tasks: bool,
    /// Run the tasks of ROLE as USER (when the node runs as root) instead of
    /// `sluice-ROLE`; repeatable.
    #[arg(long = "task-user", value_name = "ROLE=USER", value_parser = sluice_broker::parse_property)]
    pub task_users: Vec<(String, String)>,
    /// A path every task may read and run (beyond /usr, /bin, /lib, /etc,
    /// /opt); repeatable.
    #[arg(
        long = "task-read",
        value_name = "PATH",
        env = "SLUICE_TASK_READ",
        value_delimiter = ':'
    )]
    pub task_read: Vec<PathBuf>,
}

impl TaskArgs {
    /// The node's policy; `data_dir` is out of every task's reach.
    pub fn policy(&self, data_dir: &std::path::Path) -> sluice_scheduler::agent::confine::Policy {
        sluice_scheduler::agent::confine::Policy {
            insecure: self.insecure_tasks,
            users: self.task_users.iter().cloned().collect(),
            read: self.task_read.clone(),
            protected: vec![data_dir.to_path_buf()],
        }
    }
}

/// Where the cluster is: shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct DataDirArg {
    /// The data directory of a `sluice up`; its `client.toml` says the rest.
    #[arg(
        long,
        env = "SLUICE_DATA_DIR",
        default_value = "./sluice-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// The CA (PEM) the services' certificates are checked against
    /// [default: client.toml's].
    #[arg(long, env = "SLUICE_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
}

/// `--color`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

impl ColorArg {
    /// Whether to colour a stream: `always` wins over `NO_COLOR`, as
    /// no-color.org asks; `auto` colours a terminal unless `NO_COLOR` is set
    /// and not empty.
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// Whether standard output gets colour.
    pub fn stdout(self) -> bool {
        use std::io::IsTerminal as _;
        self.enabled(std::io::stdout().is_terminal())
    }
}
