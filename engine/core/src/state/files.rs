//! The rules of secrets and configs: a name has one object of each kind, a service names only
//! those that exist, and one in use by a service cannot go. The data never changes: a new
//! version is a new object (Swarm's rotation, `--secret-rm old --secret-add new`).

use crate::error::{LookupError, StateError};
use crate::event::Change;
use crate::model::{FileKind, Service, StoredFile, MAX_FILE_DATA};

use super::{pick_one, ClusterState};

impl ClusterState {
    /// The secrets or configs, in no particular order.
    pub fn files(&self, kind: FileKind) -> impl Iterator<Item = &StoredFile> {
        self.files.values().filter(move |f| f.kind == kind)
    }

    /// The secret or config named exactly `name`.
    pub fn file_by_name(&self, kind: FileKind, name: &str) -> Option<&StoredFile> {
        self.index
            .file_by_name
            .get(&(kind, name.to_string()))
            .and_then(|id| self.files.get(id))
    }

    /// Finds a secret or config by name, full ID or unambiguous ID prefix.
    ///
    /// # Errors
    /// Not found, or an ID prefix shared by several.
    pub fn file(&self, kind: FileKind, name: &str) -> Result<&StoredFile, LookupError> {
        if let Some(file) = self
            .file_by_name(kind, name)
            .or_else(|| self.files.get(name).filter(|f| f.kind == kind))
        {
            return Ok(file);
        }
        pick_one(
            kind.into(),
            name,
            self.files(kind).filter(|f| f.id.starts_with(name)),
            |f| format!("{} ({})", f.id, f.spec.name),
            self.files(kind).map(|f| f.spec.name.as_str()),
        )
    }

    /// The names of the services that use the secret or config.
    pub fn file_users(&self, file: &StoredFile) -> Vec<String> {
        self.services
            .values()
            .filter(|s| {
                s.spec
                    .task
                    .files(file.kind)
                    .iter()
                    .any(|r| r.source == file.spec.name)
            })
            .map(|s| s.spec.name.clone())
            .collect()
    }

    pub(super) fn create_file(
        &mut self,
        file: StoredFile,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let key = (file.kind, file.spec.name.clone());
        if self.files.contains_key(&file.id) || self.index.file_by_name.contains_key(&key) {
            return Err(StateError::AlreadyExists {
                kind: file.kind.into(),
                name: file.spec.name.clone(),
            });
        }
        if file.size > MAX_FILE_DATA as u64 {
            return Err(StateError::Invalid(format!(
                "{} {} holds {} bytes, more than the {MAX_FILE_DATA} a {} may",
                file.kind, file.spec.name, file.size, file.kind
            )));
        }
        self.index.file_by_name.insert(key, file.id.clone());
        emit(Change::File(file.clone()));
        self.files.insert(file.id.clone(), file);
        Ok(())
    }

    pub(super) fn remove_file(
        &mut self,
        kind: FileKind,
        id: &str,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let file = self
            .files
            .get(id)
            .filter(|f| f.kind == kind)
            .ok_or_else(|| StateError::NotFound {
                kind: kind.into(),
                id: id.to_string(),
            })?;
        let services = self.file_users(file);
        if !services.is_empty() {
            return Err(StateError::FileInUse {
                kind: file.kind,
                name: file.spec.name.clone(),
                services,
            });
        }
        let key = (file.kind, file.spec.name.clone());
        self.index.file_by_name.remove(&key);
        self.files.remove(id);
        emit(Change::FileRemoved { id: id.to_string() });
        Ok(())
    }

    /// Checks that every secret and config a service names exists.
    pub(super) fn check_service_files(&self, service: &Service) -> Result<(), StateError> {
        for kind in FileKind::ALL {
            for reference in service.spec.task.files(*kind) {
                if self.file_by_name(*kind, &reference.source).is_none() {
                    return Err(StateError::NotFound {
                        kind: (*kind).into(),
                        id: reference.source.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}
