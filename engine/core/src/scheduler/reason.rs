//! Why a node cannot take a task, and the wait reason a user reads when no node can.

use crate::units::{format_cpus, format_memory, NANO_PER_CPU};
use std::collections::BTreeMap;

use super::constraint::Constraint;

/// The first filter a node fails, in the order the filters apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Unfit {
    Down,
    /// The leader has not heard from the node yet (it just joined, or the leader just started).
    NotReady,
    Drained,
    Paused,
    /// The index of the first constraint of the task that the node fails.
    Constraint(usize),
    /// How much is missing; 0 for a resource that is not short.
    Lacks {
        nano_cpus: u64,
        memory_bytes: u64,
    },
    /// Not enough free of this generic resource kind (`gpu`).
    LacksGeneric(String),
    MaxReplicas,
    /// Another task on the node publishes this host-mode port (`8080/tcp`).
    HostPort(String),
    /// The node runs tasks as processes, which cannot apply these options (`--hostname`).
    ProcessRuntime(String),
}

impl Unfit {
    /// The reason for one node, as in "node worker-1 cannot take the task: drained".
    pub(super) fn describe(&self, constraints: &[Constraint], max_per_node: u64) -> String {
        match self {
            Unfit::Down => "down".to_string(),
            Unfit::NotReady => "not ready".to_string(),
            Unfit::Drained => "drained".to_string(),
            Unfit::Paused => "paused".to_string(),
            Unfit::Constraint(index) => match constraints.get(*index) {
                Some(constraint) => format!("fails constraint {constraint}"),
                None => "fails a constraint".to_string(),
            },
            Unfit::Lacks {
                nano_cpus,
                memory_bytes,
            } => {
                let mut tally = Tally::default();
                tally.lacks(*nano_cpus, *memory_bytes);
                tally.lack_phrases(false).join("")
            }
            Unfit::LacksGeneric(kind) => format!("lacks generic resource {kind}"),
            Unfit::MaxReplicas => format!("at max replicas per node ({max_per_node})"),
            Unfit::HostPort(port) => format!("host port {port} is in use there"),
            Unfit::ProcessRuntime(flags) => {
                format!("runs tasks as processes, which cannot apply {flags}")
            }
        }
    }
}

/// The smallest and largest shortage over the nodes short of one resource.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    nodes: usize,
    min: u64,
    max: u64,
}

impl Span {
    fn add(&mut self, value: u64) {
        if self.nodes == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.nodes += 1;
    }

    /// `2 GiB` or `512 MiB to 2 GiB`.
    fn show(&self, format: fn(u64) -> String) -> String {
        let (min, max) = (format(self.min), format(self.max));
        if min == max {
            min
        } else {
            format!("{min} to {max}")
        }
    }
}

/// Counts nodes by the first filter they fail, to explain a wait in one line.
#[derive(Debug, Default)]
pub(super) struct Tally {
    down: usize,
    not_ready: usize,
    drained: usize,
    paused: usize,
    /// Nodes per constraint index, in the order the task lists its constraints.
    constraints: BTreeMap<usize, usize>,
    short_of_cpu: Span,
    short_of_memory: Span,
    /// Nodes short of both, with their CPU and memory shortages.
    short_of_both: (Span, Span),
    at_max: usize,
    /// Nodes per generic resource kind they lack.
    short_of_generic: BTreeMap<String, usize>,
    /// Nodes per host port in use there.
    host_ports: BTreeMap<String, usize>,
    /// Nodes of the process runtime, and the options it cannot apply.
    process_runtime: (usize, String),
}

impl Tally {
    pub(super) fn add(&mut self, unfit: &Unfit) {
        match unfit {
            Unfit::Down => self.down += 1,
            Unfit::NotReady => self.not_ready += 1,
            Unfit::Drained => self.drained += 1,
            Unfit::Paused => self.paused += 1,
            Unfit::Constraint(index) => *self.constraints.entry(*index).or_default() += 1,
            Unfit::Lacks {
                nano_cpus,
                memory_bytes,
            } => self.lacks(*nano_cpus, *memory_bytes),
            Unfit::LacksGeneric(kind) => {
                *self.short_of_generic.entry(kind.clone()).or_default() += 1
            }
            Unfit::MaxReplicas => self.at_max += 1,
            Unfit::HostPort(port) => *self.host_ports.entry(port.clone()).or_default() += 1,
            Unfit::ProcessRuntime(flags) => {
                self.process_runtime.0 += 1;
                self.process_runtime.1.clone_from(flags);
            }
        }
    }

    fn lacks(&mut self, nano_cpus: u64, memory_bytes: u64) {
        match (nano_cpus > 0, memory_bytes > 0) {
            (true, true) => {
                self.short_of_both.0.add(nano_cpus);
                self.short_of_both.1.add(memory_bytes);
            }
            (true, false) => self.short_of_cpu.add(nano_cpus),
            (false, true) => self.short_of_memory.add(memory_bytes),
            (false, false) => {}
        }
    }

    /// `2 lack 1 GiB memory`, or without the count (`lacks 1.5 CPUs`) to describe one node.
    fn lack_phrases(&self, counted: bool) -> Vec<String> {
        let cpus = |span: &Span| {
            let text = span.show(format_cpus);
            let unit = if span.max == NANO_PER_CPU && span.min == span.max {
                "CPU"
            } else {
                "CPUs"
            };
            format!("{text} {unit}")
        };
        let memory = |span: &Span| format!("{} memory", span.show(format_memory));
        let phrase = |nodes: usize, what: String| {
            let verb = if nodes == 1 { "lacks" } else { "lack" };
            if counted {
                format!("{nodes} {verb} {what}")
            } else {
                format!("{verb} {what}")
            }
        };
        let mut out = Vec::new();
        if self.short_of_cpu.nodes > 0 {
            out.push(phrase(self.short_of_cpu.nodes, cpus(&self.short_of_cpu)));
        }
        if self.short_of_memory.nodes > 0 {
            out.push(phrase(
                self.short_of_memory.nodes,
                memory(&self.short_of_memory),
            ));
        }
        let (cpu, mem) = &self.short_of_both;
        if cpu.nodes > 0 {
            out.push(phrase(
                cpu.nodes,
                format!("{} and {}", cpus(cpu), memory(mem)),
            ));
        }
        out
    }

    /// `no suitable node: 2 drained, 1 paused, ...`, with only the non-zero counts.
    pub(super) fn reason(&self, constraints: &[Constraint], max_per_node: u64) -> String {
        let mut parts = Vec::new();
        for (count, what) in [
            (self.drained, "drained"),
            (self.paused, "paused"),
            (self.down, "down"),
            (self.not_ready, "not ready"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        parts.extend(self.lack_phrases(true));
        for (kind, count) in &self.short_of_generic {
            let verb = if *count == 1 { "lacks" } else { "lack" };
            parts.push(format!("{count} {verb} generic resource {kind}"));
        }
        for (index, count) in &self.constraints {
            let verb = if *count == 1 { "fails" } else { "fail" };
            match constraints.get(*index) {
                Some(constraint) => parts.push(format!("{count} {verb} constraint {constraint}")),
                None => parts.push(format!("{count} {verb} a constraint")),
            }
        }
        if self.at_max > 0 {
            parts.push(format!(
                "{} at max replicas per node ({max_per_node})",
                self.at_max
            ));
        }
        for (port, count) in &self.host_ports {
            let verb = if *count == 1 { "has" } else { "have" };
            parts.push(format!("{count} {verb} host port {port} in use"));
        }
        let (processes, flags) = &self.process_runtime;
        if *processes > 0 {
            let verb = if *processes == 1 { "runs" } else { "run" };
            parts.push(format!(
                "{processes} {verb} tasks as processes, which cannot apply {flags}"
            ));
        }
        if parts.is_empty() {
            return "no suitable node".to_string();
        }
        format!("no suitable node: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_of_several_nodes_show_their_range() {
        let mut tally = Tally::default();
        for memory_bytes in [512 << 20, 2 << 30] {
            tally.add(&Unfit::Lacks {
                nano_cpus: 0,
                memory_bytes,
            });
        }
        tally.add(&Unfit::Lacks {
            nano_cpus: NANO_PER_CPU,
            memory_bytes: 0,
        });
        tally.add(&Unfit::Lacks {
            nano_cpus: 500_000_000,
            memory_bytes: 1 << 30,
        });
        assert_eq!(
            tally.reason(&[], 0),
            "no suitable node: 1 lacks 1 CPU, 2 lack 512 MiB to 2 GiB memory, \
             1 lacks 0.5 CPUs and 1 GiB memory"
        );
    }
}
