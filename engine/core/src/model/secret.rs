//! Secrets and configs: named data the cluster keeps and hands to the tasks that use it, as a
//! file. The two differ only in how the data is kept: a secret's is sealed by the managers'
//! data key before it reaches the Raft log (the key never does), a config's is kept as given.
//!
//! A service names them (`--secret`, `--config`) with where its tasks see them; a node gets
//! the data only while it has a task that uses it (see `TaskFileData`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::SpecError;
use super::{word_enum, ObjectId};
use crate::time::Timestamp;

word_enum! {
    /// A secret (`/run/secrets/NAME`, data never shown) or a config (`/NAME`, data shown).
    #[derive(PartialOrd, Ord)]
    FileKind { Secret = "secret", Config = "config" }
}

/// The most data a secret or config may hold, as Swarm's 500 KB.
pub const MAX_FILE_DATA: usize = 500 * 1024;

impl From<FileKind> for super::Kind {
    fn from(kind: FileKind) -> Self {
        match kind {
            FileKind::Secret => super::Kind::Secret,
            FileKind::Config => super::Kind::Config,
        }
    }
}

impl FileKind {
    /// The service flag that names files of this kind.
    pub fn flag(self) -> &'static str {
        match self {
            FileKind::Secret => "--secret",
            FileKind::Config => "--config",
        }
    }

    /// Where a task sees the file named `target` when the target is not an absolute path.
    pub fn default_dir(self) -> &'static str {
        match self {
            FileKind::Secret => "/run/secrets",
            FileKind::Config => "",
        }
    }
}

/// A secret or a config, as the cluster stores it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub kind: FileKind,
    pub spec: FileSpec,
    pub data: FileData,
    /// The data's length in bytes (before sealing).
    pub size: u64,
}

impl std::fmt::Debug for StoredFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The data must never reach a log, sealed or not.
        f.debug_struct("StoredFile")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("spec", &self.spec)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What `secret create` / `config create` name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A file's data in the cluster state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileData {
    /// A secret's: AES-256-GCM under the managers' data key, the object's ID bound in as
    /// associated data (sealed data copied to another object does not open).
    Sealed {
        #[serde(with = "base64_bytes")]
        nonce: Vec<u8>,
        #[serde(with = "base64_bytes")]
        ciphertext: Vec<u8>,
    },
    /// A config's, as given.
    Plain(#[serde(with = "base64_bytes")] Vec<u8>),
}

impl std::fmt::Debug for FileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileData::Sealed { .. } => "Sealed(..)",
            FileData::Plain(_) => "Plain(..)",
        })
    }
}

/// A file as a node gets it from the leader, opened, for its tasks that use it. Only over the
/// node's mutual-TLS session, and only while it has such a task.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFileData {
    pub kind: FileKind,
    pub name: String,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for TaskFileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFileData")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A service's use of a secret or config: `--secret source=S,target=T,uid=U,gid=G,mode=M`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReference {
    /// The secret's or config's name.
    pub source: String,
    /// Where the task sees it: a file name under `/run/secrets` for a secret (an absolute
    /// path for either kind); a config's relative target is taken from `/`.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    /// The file's permission bits: 0444 unless given, as Docker's.
    pub mode: u32,
}

/// The mode of a task's secret or config file unless `mode=` says otherwise.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

impl FileReference {
    /// `source` as Docker gives it when nothing else is said: at its name, owned by root,
    /// mode 0444.
    pub fn new(source: impl Into<String>) -> FileReference {
        FileReference {
            source: source.into(),
            target: String::new(),
            uid: 0,
            gid: 0,
            mode: DEFAULT_FILE_MODE,
        }
    }

    /// The short form `NAME` or the long form `source=S[,target=T][,uid=U][,gid=G][,mode=M]`.
    ///
    /// # Errors
    /// An unknown option, a bad number, or no source; in words that name the option.
    pub fn parse(text: &str) -> Result<FileReference, String> {
        let mut reference = FileReference::new(String::new());
        if !text.contains('=') {
            reference.source = text.trim().to_string();
        } else {
            for field in text.split(',').filter(|f| !f.trim().is_empty()) {
                let Some((key, value)) = field.split_once('=') else {
                    return Err(format!("{field:?}: expected KEY=VALUE"));
                };
                let (key, value) = (key.trim(), value.trim());
                let number = |radix: u32| {
                    u32::from_str_radix(value, radix)
                        .map_err(|_| format!("{key}={value}: expected a number"))
                };
                match key.to_ascii_lowercase().as_str() {
                    "source" | "src" => reference.source = value.to_string(),
                    "target" => reference.target = value.to_string(),
                    "uid" => reference.uid = number(10)?,
                    "gid" => reference.gid = number(10)?,
                    "mode" => {
                        reference.mode = number(8).map_err(|_| {
                            format!("mode={value}: expected octal permission bits, as 0400")
                        })?
                    }
                    other => {
                        return Err(format!(
                            "unknown option {other:?} (options: source, target, uid, gid, mode)"
                        ))
                    }
                }
            }
        }
        if reference.source.is_empty() {
            return Err(format!("{text:?} names no source"));
        }
        Ok(reference)
    }

    /// The target as given, or the source's name when none was.
    pub fn target_or_source(&self) -> &str {
        if self.target.is_empty() {
            &self.source
        } else {
            &self.target
        }
    }

    /// The absolute path where the task sees the file.
    pub fn path_in_task(&self, kind: FileKind) -> String {
        let target = self.target_or_source();
        if target.starts_with('/') {
            target.to_string()
        } else {
            format!("{}/{target}", kind.default_dir())
        }
    }

    /// # Errors
    /// A name or target that is not a plain path, or a mode beyond the permission bits.
    pub fn validate(&self, kind: FileKind) -> Result<(), SpecError> {
        let error = |message: String| SpecError {
            field: kind.flag().to_string(),
            message,
        };
        check_file_name(&self.source).map_err(&error)?;
        let path = self.path_in_task(kind);
        if path
            .split('/')
            .any(|part| matches!(part, "." | "..") || part.contains('\0'))
            || path.ends_with('/')
        {
            return Err(error(format!(
                "target {:?} is not a plain file path",
                self.target_or_source()
            )));
        }
        if self.mode > 0o777 {
            return Err(error(format!(
                "mode={:o} is beyond the permission bits (0777)",
                self.mode
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for FileReference {
    /// The long form back, as `service inspect --pretty` shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "source={}", self.source)?;
        if !self.target.is_empty() {
            write!(f, ",target={}", self.target)?;
        }
        write!(
            f,
            ",uid={},gid={},mode={:04o}",
            self.uid, self.gid, self.mode
        )
    }
}

/// Checks the references of one kind: each valid, and no two at one path in the task.
///
/// # Errors
/// The first problem, named as the kind's flag.
pub fn validate_file_references(
    kind: FileKind,
    references: &[FileReference],
) -> Result<(), SpecError> {
    let mut paths = std::collections::BTreeSet::new();
    for reference in references {
        reference.validate(kind)?;
        let path = reference.path_in_task(kind);
        if !paths.insert(path.clone()) {
            return Err(SpecError {
                field: kind.flag().to_string(),
                message: format!("two {kind}s at {path}"),
            });
        }
    }
    Ok(())
}

/// Secret and config names as Docker takes them: up to 64 letters, digits, `_`, `.` and `-`,
/// starting and ending with a letter or digit.
///
/// # Errors
/// What is wrong with the name.
pub fn check_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use up to 64 letters, digits, '_', '.' and '-', starting \
             and ending with a letter or digit"
        ))
    }
}

/// Bytes as base64 in JSON (the control API, the nodes' sessions), as bytes in the Raft log's
/// binary encoding: `#[serde(with = "base64_bytes")]`.
pub mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&STANDARD.encode(data))
        } else {
            serializer.serialize_bytes(data)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            STANDARD
                .decode(text.as_bytes())
                .map_err(serde::de::Error::custom)
        } else {
            Ok(serde_bytes_vec(deserializer)?)
        }
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(byte) = seq.next_element()? {
                    out.push(byte);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_docker_reads_them() {
        let short = FileReference::parse("db_pw").expect("short");
        assert_eq!(short.source, "db_pw");
        assert_eq!(short.path_in_task(FileKind::Secret), "/run/secrets/db_pw");
        assert_eq!(short.path_in_task(FileKind::Config), "/db_pw");
        assert_eq!(short.mode, 0o444);
        let long = FileReference::parse("source=db_pw_v2,target=db_pw,uid=70,gid=70,mode=0400")
            .expect("long");
        assert_eq!(
            (
                long.source.as_str(),
                long.target.as_str(),
                long.uid,
                long.mode
            ),
            ("db_pw_v2", "db_pw", 70, 0o400)
        );
        assert_eq!(long.path_in_task(FileKind::Secret), "/run/secrets/db_pw");
        assert_eq!(
            long.to_string(),
            "source=db_pw_v2,target=db_pw,uid=70,gid=70,mode=0400"
        );
        let config =
            FileReference::parse("source=nginx,target=/etc/nginx/nginx.conf").expect("config");
        assert_eq!(
            config.path_in_task(FileKind::Config),
            "/etc/nginx/nginx.conf"
        );
    }

    #[test]
    fn bad_references_are_refused_naming_what_is_wrong() {
        for (text, wanted) in [
            ("target=x", "names no source"),
            ("source=a,colour=red", "unknown option \"colour\""),
            ("source=a,mode=0999", "octal"),
            ("source=a,uid=-1", "uid=-1"),
        ] {
            let error = FileReference::parse(text).expect_err(text);
            assert!(error.contains(wanted), "{text}: {error}");
        }
        let escape = FileReference::parse("source=a,target=../etc/passwd").expect("parses");
        let error = escape.validate(FileKind::Secret).expect_err("escape");
        assert_eq!(error.field, "--secret");
        let twice = [
            FileReference::parse("a").expect("a"),
            FileReference::parse("source=b,target=a").expect("b"),
        ];
        let error = validate_file_references(FileKind::Secret, &twice).expect_err("twice");
        assert!(error.message.contains("/run/secrets/a"), "{error:?}");
        assert!(check_file_name("db pw").is_err());
        assert!(check_file_name("-x").is_err());
        assert!(check_file_name("db_pw.v2").is_ok());
    }

    #[test]
    fn data_is_base64_in_json_and_bytes_in_the_log() {
        let data = FileData::Plain(b"port: 80\n".to_vec());
        let json = serde_json::to_string(&data).expect("json");
        assert_eq!(json, r#"{"plain":"cG9ydDogODAK"}"#);
        assert_eq!(serde_json::from_str::<FileData>(&json).expect("back"), data);
        let sealed = FileData::Sealed {
            nonce: vec![1; 12],
            ciphertext: vec![2; 40],
        };
        let binary = bincode::serialize(&sealed).expect("bincode");
        assert!(binary.len() < 80, "{} bytes", binary.len());
        assert_eq!(
            bincode::deserialize::<FileData>(&binary).expect("back"),
            sealed
        );
    }
}
