//! A table of stored objects by ID that costs next to nothing to copy.
//!
//! The leader's passes over a large cluster read the state for hundreds of milliseconds. If
//! they held the state's lock that long, the state machine could not apply the next entries,
//! and a task-fair lock would also stop every reader queued behind it (the dispatcher, the API,
//! Raft's own threads). So a pass reads a copy: a persistent map shares its tree with the
//! original, and the objects themselves are shared behind `Arc`. A change copies only the path
//! to what it changes, and the one object.

use std::sync::Arc;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::model::ObjectId;

#[derive(Debug, PartialEq)]
pub struct Table<T> {
    rows: imbl::OrdMap<ObjectId, Arc<T>>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            rows: self.rows.clone(),
        }
    }
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            rows: imbl::OrdMap::new(),
        }
    }
}

impl<T: Clone> Table<T> {
    pub fn get(&self, id: &str) -> Option<&T> {
        self.rows.get(id).map(Arc::as_ref)
    }

    /// The object to change, copied first if a copy of the table still shares it.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.rows.get_mut(id).map(Arc::make_mut)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    pub fn insert(&mut self, id: ObjectId, object: T) {
        self.rows.insert(id, Arc::new(object));
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        self.rows.remove(id).map(Arc::unwrap_or_clone)
    }

    /// The objects in ID order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.rows.values().map(Arc::as_ref)
    }
}

/// Encoded as a map from ID to object, as the `BTreeMap` it replaces was: snapshots written
/// before read the same.
impl<T: Serialize> Serialize for Table<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.rows.len()))?;
        for (id, object) in &self.rows {
            map.serialize_entry(id, object.as_ref())?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rows = std::collections::BTreeMap::<ObjectId, T>::deserialize(deserializer)?;
        Ok(Table {
            rows: rows
                .into_iter()
                .map(|(id, object)| (id, Arc::new(object)))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_what_it_saw_while_the_original_changes() {
        let mut table = Table::default();
        table.insert("a".to_string(), 1);
        table.insert("b".to_string(), 2);
        let copy = table.clone();
        *table.get_mut("a").expect("a") = 10;
        table.remove("b");
        table.insert("c".to_string(), 3);
        assert_eq!(copy.values().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(table.values().copied().collect::<Vec<_>>(), [10, 3]);
    }

    #[test]
    fn it_encodes_as_the_map_it_replaced() {
        let mut table = Table::default();
        table.insert("b".to_string(), 2u32);
        table.insert("a".to_string(), 1u32);
        let map: std::collections::BTreeMap<String, u32> =
            [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let encoded = bincode::serialize(&table).expect("encode");
        assert_eq!(encoded, bincode::serialize(&map).expect("encode"));
        let decoded: Table<u32> = bincode::deserialize(&encoded).expect("decode");
        assert_eq!(decoded, table);
    }
}
