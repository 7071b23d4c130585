//! openraft's storage conformance suite, run against our redb log store and state machine.

use std::sync::Arc;

use essaim_manager::replica::raft::log_store::LogStore;
use essaim_manager::replica::raft::state_machine::StateMachine;
use essaim_manager::replica::raft::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let failure = |e: &dyn std::fmt::Display| -> StorageError {
            StorageIOError::write(openraft::AnyError::error(e.to_string())).into()
        };
        let dir = tempfile::tempdir().map_err(|e| failure(&e))?;
        let db = redb::Database::create(dir.path().join("raft.redb")).map_err(|e| failure(&e))?;
        let db = Arc::new(db);
        let log = LogStore::open(db.clone()).map_err(|e| failure(&e))?;
        let machine = StateMachine::open(db).map_err(|e| failure(&e))?;
        Ok((dir, log, machine))
    }
}

#[test]
fn redb_store_passes_openraft_conformance_suite() {
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("storage conformance failed: {e}");
    }
}
