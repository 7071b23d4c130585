//! The eligible nodes of one task group, ranked for the next assignment: a tree of spread
//! groups (one level per spread preference) whose leaves order nodes by load.
//!
//! ```text
//!                 root                      children ordered by (service tasks, label order)
//!          /               \
//!     zone=a (3)         zone=b (2)         <- the next task goes to zone=b
//!      |                  |
//!   {(1,4,n1) (2,2,n2)}  {(1,1,n3) (1,5,n4)}  leaves: (service tasks, all tasks, node)
//! ```
//!
//! Picking walks down the smallest child at each level, then takes the leaf's first node:
//! O(levels * log n) per task instead of a scan of every node.

use std::collections::{BTreeMap, BTreeSet};

/// Where a node sits in a spread level: its label value, nodes without the label after all
/// the others (they form their own group).
pub(super) type SpreadKey<'a> = (bool, &'a str);

/// One eligible node as the tree starts: its index, load, and where its spread keys (one per
/// level) start in the shared key list (one list, not one per node: groups are rebuilt often).
pub(super) struct Entry {
    pub node: usize,
    pub keys_at: usize,
    pub service_tasks: u64,
    pub total_tasks: u64,
}

#[derive(Debug)]
enum Kind {
    /// Children that still have eligible nodes, by (service tasks, branch index). Branches
    /// are created in label order, so the index breaks ties by label value.
    Inner(BTreeSet<(u64, usize)>),
    /// Eligible nodes by (service tasks, all tasks, node index). Nodes are indexed in ID order.
    Leaf(BTreeSet<(u64, u64, usize)>),
}

#[derive(Debug)]
struct Branch {
    parent: Option<usize>,
    /// Tasks of the service on this branch's nodes, including nodes that filled up since:
    /// their tasks still count towards the spread.
    service_tasks: u64,
    /// Eligible nodes below; a branch without any leaves its parent's choice.
    eligible: usize,
    kind: Kind,
}

#[derive(Debug)]
pub(super) struct SpreadTree {
    /// Index 0 is the root.
    branches: Vec<Branch>,
    /// For every node index: its leaf and its current key there, while eligible.
    slots: Vec<Option<(usize, (u64, u64))>>,
}

impl SpreadTree {
    /// Builds the tree over `entries`, with `levels` spread levels whose keys each entry finds
    /// in `keys`; `node_count` bounds the node indexes.
    pub(super) fn build(
        entries: Vec<Entry>,
        keys: &[SpreadKey<'_>],
        levels: usize,
        node_count: usize,
    ) -> Self {
        let mut tree = SpreadTree {
            branches: Vec::new(),
            slots: vec![None; node_count],
        };
        tree.add_branch(None, entries, keys, 0, levels);
        tree
    }

    fn add_branch(
        &mut self,
        parent: Option<usize>,
        entries: Vec<Entry>,
        keys: &[SpreadKey<'_>],
        level: usize,
        levels: usize,
    ) -> usize {
        let index = self.branches.len();
        self.branches.push(Branch {
            parent,
            service_tasks: entries.iter().map(|e| e.service_tasks).sum(),
            eligible: entries.len(),
            kind: Kind::Leaf(BTreeSet::new()),
        });
        if level == levels {
            for entry in &entries {
                self.slots[entry.node] = Some((index, (entry.service_tasks, entry.total_tasks)));
            }
            // Collected at once, the set is built in bulk rather than node by node.
            let nodes = entries
                .iter()
                .map(|entry| (entry.service_tasks, entry.total_tasks, entry.node))
                .collect();
            self.branches[index].kind = Kind::Leaf(nodes);
            return index;
        }
        // Bucketed by value (few values, many nodes): cheaper than sorting by key.
        let mut runs: BTreeMap<SpreadKey<'_>, Vec<Entry>> = BTreeMap::new();
        for entry in entries {
            runs.entry(keys[entry.keys_at + level])
                .or_default()
                .push(entry);
        }
        let mut children = BTreeSet::new();
        for run in runs.into_values() {
            let child = self.add_branch(Some(index), run, keys, level + 1, levels);
            children.insert((self.branches[child].service_tasks, child));
        }
        self.branches[index].kind = Kind::Inner(children);
        index
    }

    /// The node the next task goes to, if any is eligible.
    pub(super) fn best(&self) -> Option<usize> {
        let mut branch = self.branches.first()?;
        loop {
            match &branch.kind {
                Kind::Inner(children) => {
                    let (_, child) = children.first()?;
                    branch = &self.branches[*child];
                }
                Kind::Leaf(nodes) => return nodes.first().map(|(_, _, node)| *node),
            }
        }
    }

    /// Records one more task of the service on `node`, with its new total; `still_eligible`
    /// says whether it can take another task of the group.
    pub(super) fn assigned(&mut self, node: usize, total_tasks: u64, still_eligible: bool) {
        let Some((leaf, (service_tasks, old_total))) = self.slots[node] else {
            return;
        };
        if let Kind::Leaf(nodes) = &mut self.branches[leaf].kind {
            nodes.remove(&(service_tasks, old_total, node));
            if still_eligible {
                nodes.insert((service_tasks + 1, total_tasks, node));
            }
        }
        self.slots[node] = still_eligible.then_some((leaf, (service_tasks + 1, total_tasks)));

        let mut current = leaf;
        loop {
            let branch = &mut self.branches[current];
            let old_tasks = branch.service_tasks;
            branch.service_tasks += 1;
            if !still_eligible {
                branch.eligible -= 1;
            }
            let (new_tasks, eligible) = (branch.service_tasks, branch.eligible);
            let Some(parent) = branch.parent else {
                break;
            };
            if let Kind::Inner(children) = &mut self.branches[parent].kind {
                children.remove(&(old_tasks, current));
                if eligible > 0 {
                    children.insert((new_tasks, current));
                }
            }
            current = parent;
        }
    }
}
