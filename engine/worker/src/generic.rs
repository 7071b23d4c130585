//! The node's share of the generic resources (see [`essaim_core::model::GenericResources`]):
//! the scheduler counts them, this node picks which named units each task gets, and tells the
//! task, as Swarm does, in `DOCKER_RESOURCE_KIND` (the unit names, or the count).

use std::collections::{BTreeMap, HashMap};

use essaim_core::model::{generic_env_var, GenericResources, GenericUnits, ObjectId, Task};
use parking_lot::Mutex;

use crate::executor::StartError;

/// What the node declared, and which named units its tasks hold.
pub struct GenericUnitsHeld {
    declared: GenericResources,
    held: Mutex<HashMap<ObjectId, BTreeMap<String, Vec<String>>>>,
}

impl GenericUnitsHeld {
    pub fn new(declared: GenericResources) -> Self {
        GenericUnitsHeld {
            declared,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The variables that tell `task` what it was given, named units taken for it.
    ///
    /// # Errors
    /// The node lacks the kind, or every named unit is still held (by a task that is
    /// stopping): the task is rejected and placed again.
    pub fn take(&self, task: &Task) -> Result<Vec<(String, String)>, StartError> {
        let wanted = &task.spec.resources.generic;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut held = self.held.lock();
        let mut taken: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut env = Vec::new();
        for (kind, count) in wanted {
            let value = match self.declared.0.get(kind) {
                None => {
                    return Err(StartError::rejected(format!(
                        "--generic-resource {kind}={count}: this node has no {kind}"
                    )))
                }
                Some(GenericUnits::Count(_)) => count.to_string(),
                Some(GenericUnits::Named(names)) => {
                    let in_use: Vec<&String> = held
                        .values()
                        .filter_map(|units| units.get(kind))
                        .flatten()
                        .collect();
                    let free: Vec<String> = names
                        .iter()
                        .filter(|name| !in_use.contains(name))
                        .take(*count as usize)
                        .cloned()
                        .collect();
                    if (free.len() as u64) < *count {
                        return Err(StartError::rejected(format!(
                            "--generic-resource {kind}={count}: {} of this node's {} {kind} \
                             are still held by tasks that are stopping",
                            in_use.len(),
                            names.len()
                        )));
                    }
                    let value = free.join(",");
                    taken.insert(kind.clone(), free);
                    value
                }
            };
            env.push((generic_env_var(kind), value));
        }
        held.insert(task.id.clone(), taken);
        Ok(env)
    }

    /// The task ended: its named units are free again.
    pub fn release(&self, task_id: &str) {
        self.held.lock().remove(task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, kind: &str, count: u64) -> Task {
        let mut task = crate::testing::task(id);
        task.spec.resources.generic.insert(kind.into(), count);
        task
    }

    #[test]
    fn named_units_go_to_one_task_at_a_time_and_come_back() {
        let declared = GenericResources::parse(["gpu=GPU-a", "gpu=GPU-b", "ssd=4"]).expect("valid");
        let units = GenericUnitsHeld::new(declared);
        assert_eq!(
            units.take(&task("t1", "gpu", 1)).expect("one"),
            [("DOCKER_RESOURCE_GPU".to_string(), "GPU-a".to_string())]
        );
        assert_eq!(
            units.take(&task("t2", "gpu", 1)).expect("the other"),
            [("DOCKER_RESOURCE_GPU".to_string(), "GPU-b".to_string())]
        );
        let none_left = units.take(&task("t3", "gpu", 1)).expect_err("all held");
        assert!(
            none_left.message.contains("still held"),
            "{}",
            none_left.message
        );
        units.release("t1");
        assert_eq!(
            units.take(&task("t3", "gpu", 1)).expect("freed")[0].1,
            "GPU-a"
        );
        assert_eq!(units.take(&task("t4", "ssd", 2)).expect("count")[0].1, "2");
        let lacking = units.take(&task("t5", "fpga", 1)).expect_err("no fpga");
        assert!(lacking.message.contains("this node has no fpga"));
    }
}
