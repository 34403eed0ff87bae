//! Where a pending instance goes: the nodes the scheduler has heard from,
//! what they hold, and the choice among those with room.
//!
//! A node has room when the resources of its non-terminal tasks plus the
//! new one fit within the capacity it reported, in each of cpu, ram and
//! disk. Among the nodes with room the scheduler picks the one with the
//! fewest tasks of the same job (spreading a job's instances), then the most
//! free cpu, then the smallest name, so the choice is deterministic. CPU is
//! counted in thousandths of a core, so sums of fractions are exact.

use std::collections::{BTreeMap, HashMap};

use crate::spec::Resources;

/// A node agent as its heartbeats describe it. Not persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The node's name, as it heartbeats; unique in the cluster.
    pub name: String,
    /// URL of the node's Tail service, from its last heartbeat; copied into
    /// its tasks for log tailing.
    pub tail_endpoint: String,
    /// What the node offers, from its last heartbeat.
    pub capacity: Capacity,
    /// The cpu it reported, as reported (for display).
    pub cpu: f64,
    /// When its last heartbeat arrived, unix nanoseconds; older than the
    /// agent timeout makes it not alive.
    pub last_heartbeat_unix_nanos: i64,
    /// Heard from within the agent timeout.
    pub alive: bool,
}

/// Resources in placement units: cpu in thousandths of a core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Capacity {
    /// CPU in thousandths of a core; 0 for a negative or non-finite cpu.
    pub millicpu: u64,
    /// Memory, in MiB.
    pub ram_mb: u64,
    /// Disk, in MiB.
    pub disk_mb: u64,
}

impl Capacity {
    /// A node's reported capacity; a negative or non-finite cpu is none.
    pub fn new(cpu: f64, ram_mb: u64, disk_mb: u64) -> Self {
        Capacity {
            millicpu: millicpu(cpu),
            ram_mb,
            disk_mb,
        }
    }

    /// What one instance of a job needs.
    pub fn of(resources: &Resources) -> Self {
        Capacity::new(resources.cpu, resources.ram_mb, resources.disk_mb)
    }

    /// The sum, dimension by dimension, saturating instead of overflowing.
    pub fn plus(self, other: Capacity) -> Capacity {
        Capacity {
            millicpu: self.millicpu.saturating_add(other.millicpu),
            ram_mb: self.ram_mb.saturating_add(other.ram_mb),
            disk_mb: self.disk_mb.saturating_add(other.disk_mb),
        }
    }

    /// Whether `self` fits within `limit` in every dimension.
    pub fn fits_in(self, limit: Capacity) -> bool {
        self.millicpu <= limit.millicpu
            && self.ram_mb <= limit.ram_mb
            && self.disk_mb <= limit.disk_mb
    }
}

fn millicpu(cpu: f64) -> u64 {
    if cpu.is_finite() && cpu > 0.0 {
        // Saturates for absurd values; rounding makes 0.1 + 0.2 exact.
        (cpu * 1000.0).round() as u64
    } else {
        0
    }
}

/// What the tasks on one node use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Load {
    /// Resources the node's non-terminal tasks hold.
    pub used: Capacity,
    /// Non-terminal tasks on the node.
    pub tasks: u32,
    /// Non-terminal tasks per job key.
    pub by_job: HashMap<String, u32>,
}

impl Load {
    /// Counts one more non-terminal task of `job` holding `need`.
    pub fn add(&mut self, job: &str, need: Capacity) {
        self.used = self.used.plus(need);
        self.tasks += 1;
        *self.by_job.entry(job.to_string()).or_default() += 1;
    }
}

/// The live nodes and their loads while a batch of placements is made.
#[derive(Debug, Default)]
pub struct Placer {
    /// Live nodes, by name.
    pub nodes: BTreeMap<String, (Capacity, Load)>,
}

impl Placer {
    /// Starts from the live agents; loads are added with [`Placer::add`].
    pub fn new<'a>(agents: impl Iterator<Item = &'a Agent>) -> Self {
        let nodes = agents
            .filter(|a| a.alive)
            .map(|a| (a.name.clone(), (a.capacity, Load::default())))
            .collect();
        Placer { nodes }
    }

    /// Counts a non-terminal task already on `node` (ignored if the node is
    /// not live).
    pub fn add(&mut self, node: &str, job: &str, need: Capacity) {
        if let Some((_, load)) = self.nodes.get_mut(node) {
            load.add(job, need);
        }
    }

    /// Chooses a node for one instance of `job` needing `resources` and
    /// counts it there; the error is the reason it stays pending.
    pub fn place(&mut self, job: &str, resources: &Resources) -> Result<String, String> {
        let need = Capacity::of(resources);
        if self.nodes.is_empty() {
            return Err("no live nodes".into());
        }
        let best = self
            .nodes
            .iter()
            .filter(|(_, (capacity, load))| load.used.plus(need).fits_in(*capacity))
            .min_by_key(|(name, (capacity, load))| {
                let of_job = load.by_job.get(job).copied().unwrap_or(0);
                let free_cpu = capacity.millicpu.saturating_sub(load.used.millicpu);
                (of_job, std::cmp::Reverse(free_cpu), name.as_str())
            })
            .map(|(name, _)| name.clone());
        match best {
            Some(name) => {
                if let Some((_, load)) = self.nodes.get_mut(&name) {
                    load.add(job, need);
                }
                Ok(name)
            }
            None => Err(format!(
                "no node has room for cpu {}, ram_mb {}, disk_mb {}",
                resources.cpu, resources.ram_mb, resources.disk_mb
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, cpu: f64, alive: bool) -> Agent {
        Agent {
            name: name.into(),
            tail_endpoint: String::new(),
            capacity: Capacity::new(cpu, 1000, 1000),
            cpu,
            last_heartbeat_unix_nanos: 0,
            alive,
        }
    }

    fn res(cpu: f64) -> Resources {
        Resources {
            cpu,
            ram_mb: 10,
            disk_mb: 10,
        }
    }

    #[test]
    fn spreads_then_prefers_free_cpu_then_name() {
        let agents = [
            agent("b", 4.0, true),
            agent("a", 4.0, true),
            agent("c", 8.0, true),
        ];
        let mut placer = Placer::new(agents.iter());
        let chosen: Vec<String> = (0..4)
            .map(|_| placer.place("j", &res(1.0)).unwrap())
            .collect();
        assert_eq!(chosen, ["c", "a", "b", "c"]);
        // Another job starts its own spread on the node with most cpu free.
        assert_eq!(placer.place("k", &res(1.0)).unwrap(), "c");
    }

    #[test]
    fn fractions_add_up_exactly_and_full_nodes_are_skipped() {
        let agents = [agent("a", 0.3, true), agent("dead", 100.0, false)];
        let mut placer = Placer::new(agents.iter());
        for _ in 0..3 {
            assert_eq!(placer.place("j", &res(0.1)).unwrap(), "a");
        }
        assert_eq!(
            placer.place("j", &res(0.1)).unwrap_err(),
            "no node has room for cpu 0.1, ram_mb 10, disk_mb 10"
        );
        let mut none = Placer::new([agent("dead", 1.0, false)].iter());
        assert_eq!(none.place("j", &res(0.1)).unwrap_err(), "no live nodes");
    }
}
