//! What this machine can give tasks, as a node reports it when it joins.

use essaim_core::model::{GenericResources, NodeResources};

/// The machine's CPUs and memory (0 for what cannot be read), and the generic resources the
/// node was told it has.
pub fn resources(generic: &GenericResources) -> NodeResources {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    NodeResources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .unwrap_or(0),
        generic: generic.counts(),
    }
}

/// `MemTotal:  24608768 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_memory_from_meminfo() {
        let text = "MemTotal:       24608768 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(24_608_768 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }
}
