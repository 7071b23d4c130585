//! Generic resources, as Swarm has them: things a node has a number of that the scheduler
//! does not otherwise know (GPUs, FPGAs, licences). A node declares them
//! (`essaimd --generic-resource gpu=2`, or one named unit per flag: `gpu=GPU-3a1f`); a service
//! reserves some (`--generic-resource gpu=1`), and its tasks go only where enough are free.
//! The node itself hands a task named units, and tells it which in `DOCKER_RESOURCE_GPU`.

use std::collections::BTreeMap;

/// What a node declares of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenericUnits {
    /// So many, with no names.
    Count(u64),
    /// These, by name.
    Named(Vec<String>),
}

/// A node's declared generic resources, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenericResources(pub BTreeMap<String, GenericUnits>);

/// Kinds as Swarm takes them: letters, digits, `_`, `-` and `.`.
///
/// # Errors
/// What is wrong with the kind.
pub fn check_generic_kind(kind: &str) -> Result<(), String> {
    let ok = !kind.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid generic resource kind {kind:?}: use letters, digits, '_', '-' and '.'"
        ))
    }
}

impl GenericResources {
    /// `KIND=COUNT` or `KIND=NAME` entries; the named units of one kind add up, and a kind
    /// is counted or named, not both.
    ///
    /// # Errors
    /// An entry that is not `KIND=VALUE`, a bad kind, or a kind both counted and named.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut resources = BTreeMap::new();
        for entry in entries {
            let (kind, value) = entry
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(_, v)| !v.is_empty())
                .ok_or_else(|| format!("{entry:?}: expected KIND=COUNT or KIND=NAME"))?;
            check_generic_kind(kind)?;
            let units = match value.parse::<u64>() {
                Ok(count) => GenericUnits::Count(count),
                Err(_) => GenericUnits::Named(vec![value.to_string()]),
            };
            match (resources.get_mut(kind), units) {
                (None, units) => {
                    resources.insert(kind.to_string(), units);
                }
                (Some(GenericUnits::Named(names)), GenericUnits::Named(more)) => {
                    names.extend(more);
                }
                _ => {
                    return Err(format!(
                        "generic resource {kind} is given twice, or both as a count and by name"
                    ))
                }
            }
        }
        Ok(GenericResources(resources))
    }

    /// How many of each kind, as the node reports them to the scheduler.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|(kind, units)| {
                let count = match units {
                    GenericUnits::Count(count) => *count,
                    GenericUnits::Named(names) => names.len() as u64,
                };
                (kind.clone(), count)
            })
            .collect()
    }
}

/// The environment variable that tells a task what it was given of `kind`, as Swarm names it.
pub fn generic_env_var(kind: &str) -> String {
    let upper: String = kind
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("DOCKER_RESOURCE_{upper}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_names_read_as_swarm_reads_them() {
        let resources =
            GenericResources::parse(["gpu=GPU-1", "gpu=GPU-2", "ssd=3"]).expect("valid");
        assert_eq!(
            resources.0["gpu"],
            GenericUnits::Named(vec!["GPU-1".into(), "GPU-2".into()])
        );
        assert_eq!(
            resources.counts(),
            BTreeMap::from([("gpu".to_string(), 2), ("ssd".to_string(), 3)])
        );
        for (bad, wanted) in [
            ("gpu", "expected KIND=COUNT"),
            ("g pu=1", "invalid generic resource kind"),
            ("ssd=2", "given twice"),
        ] {
            let error = GenericResources::parse(["ssd=1", bad]).expect_err(bad);
            assert!(error.contains(wanted), "{bad}: {error}");
        }
        assert_eq!(generic_env_var("nvidia-gpu"), "DOCKER_RESOURCE_NVIDIA_GPU");
    }
}
