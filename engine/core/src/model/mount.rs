//! File systems mounted into a task (`--mount`): a path of the node (bind), a named volume
//! that outlives the task, or a tmpfs in memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::SpecError;
use super::word_enum;

word_enum! {
    /// What a mount's source is.
    MountKind { Bind = "bind", Volume = "volume", Tmpfs = "tmpfs" }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// Bind: an absolute path on the node; volume: the volume's name (empty: a volume of the
    /// task's own, gone with it); tmpfs: empty.
    pub source: String,
    /// Where the task sees it: an absolute path.
    pub target: String,
    pub read_only: bool,
    /// Labels a volume gets when a node makes it (`volume-label=k=v`).
    pub volume_labels: BTreeMap<String, String>,
    /// A tmpfs's size in bytes; 0: the kernel's default (half the node's memory).
    pub tmpfs_size: u64,
}

fn error(message: impl Into<String>) -> SpecError {
    SpecError {
        field: "--mount".to_string(),
        message: message.into(),
    }
}

/// Volume names as Docker takes them: a letter or digit, then letters, digits, `_`, `.`, `-`.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid volume name {name:?}: use letters, digits, '_', '.' and '-', starting with \
             a letter or digit"
        ))
    }
}

impl std::str::FromStr for Mount {
    type Err = String;

    /// Docker's long form: `type=bind|volume|tmpfs,source=S,target=T[,readonly]
    /// [,volume-label=k=v][,tmpfs-size=N]` (`src`, `dst`, `destination`, `ro` too); the type
    /// is `volume` when left out, as Docker has it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut mount = Mount {
            kind: MountKind::Volume,
            source: String::new(),
            target: String::new(),
            read_only: false,
            volume_labels: BTreeMap::new(),
            tmpfs_size: 0,
        };
        for field in text.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (field.trim(), None),
            };
            let needs = |value: Option<&'_ str>| -> Result<String, String> {
                value
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key} needs a value, as {key}=..."))
            };
            match key.to_ascii_lowercase().as_str() {
                "type" => mount.kind = needs(value)?.parse().map_err(|e| format!("{e}"))?,
                "source" | "src" => mount.source = needs(value)?,
                "target" | "dst" | "destination" => mount.target = needs(value)?,
                "readonly" | "ro" => {
                    mount.read_only = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true" | "1") => true,
                        Some("false" | "0") => false,
                        Some(other) => {
                            return Err(format!("{key}={other}: expected true or false"))
                        }
                    }
                }
                "volume-label" => {
                    let label = needs(value)?;
                    let (label, label_value) = label.split_once('=').unwrap_or((&label, ""));
                    mount
                        .volume_labels
                        .insert(label.to_string(), label_value.to_string());
                }
                "tmpfs-size" => mount.tmpfs_size = crate::units::parse_memory(&needs(value)?)?,
                other => {
                    return Err(format!(
                        "unknown mount option {other:?} (options: type, source, target, \
                         readonly, volume-label, tmpfs-size)"
                    ))
                }
            }
        }
        if mount.target.is_empty() {
            return Err(format!("{text:?} has no target=PATH"));
        }
        Ok(mount)
    }
}

impl std::fmt::Display for Mount {
    /// The long form back, as `service inspect --pretty` and the plan show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "type={}", self.kind)?;
        if !self.source.is_empty() {
            write!(f, ",source={}", self.source)?;
        }
        write!(f, ",target={}", self.target)?;
        if self.read_only {
            f.write_str(",readonly")?;
        }
        for (key, value) in &self.volume_labels {
            write!(f, ",volume-label={key}={value}")?;
        }
        if self.tmpfs_size > 0 {
            write!(f, ",tmpfs-size={}", self.tmpfs_size)?;
        }
        Ok(())
    }
}

impl Mount {
    /// # Errors
    /// What is wrong with the mount, named as `--mount`.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !self.target.starts_with('/') {
            return Err(error(format!(
                "target {:?} is not an absolute path",
                self.target
            )));
        }
        match self.kind {
            MountKind::Bind if !self.source.starts_with('/') => Err(error(format!(
                "a bind mount's source must be an absolute path on the node, not {:?}",
                self.source
            ))),
            _ if crate::template::has_placeholders(&self.source) => {
                crate::template::check(&self.source).map_err(error)
            }
            MountKind::Volume if !self.source.is_empty() => {
                check_volume_name(&self.source).map_err(error)
            }
            MountKind::Tmpfs if !self.source.is_empty() => Err(error("a tmpfs has no source")),
            _ if !self.volume_labels.is_empty() && self.kind != MountKind::Volume => {
                Err(error("volume-label is for volume mounts"))
            }
            _ if self.tmpfs_size > 0 && self.kind != MountKind::Tmpfs => {
                Err(error("tmpfs-size is for tmpfs mounts"))
            }
            _ => Ok(()),
        }
    }
}

/// Checks every mount, and that no two share a target.
///
/// # Errors
/// The first mount that is wrong.
pub fn validate_mounts(mounts: &[Mount]) -> Result<(), SpecError> {
    let mut targets = std::collections::BTreeSet::new();
    for mount in mounts {
        mount.validate()?;
        if !targets.insert(mount.target.trim_end_matches('/')) {
            return Err(error(format!("two mounts at {}", mount.target)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(text: &str) -> Mount {
        text.parse().expect(text)
    }

    #[test]
    fn the_long_form_reads_as_docker_reads_it() {
        let volume = mount("source=data,target=/var/lib/db,volume-label=team=shop");
        assert_eq!(volume.kind, MountKind::Volume, "volume by default");
        assert_eq!(volume.source, "data");
        assert_eq!(volume.volume_labels["team"], "shop");
        let bind = mount("type=bind,src=/srv/www,dst=/www,ro");
        assert_eq!((bind.kind, bind.read_only), (MountKind::Bind, true));
        let tmpfs = mount("type=tmpfs,destination=/cache,tmpfs-size=64M");
        assert_eq!(tmpfs.tmpfs_size, 64 << 20);
        assert_eq!(
            tmpfs.to_string(),
            "type=tmpfs,target=/cache,tmpfs-size=67108864"
        );
        assert_eq!(mount(&bind.to_string()), bind, "printed back, read again");
    }

    #[test]
    fn bad_mounts_say_what_is_wrong() {
        for (text, wanted) in [
            ("type=nfs,target=/x", "expected one of"),
            ("source=data", "has no target"),
            ("target=/x,color=red", "unknown mount option \"color\""),
            ("target=/x,readonly=maybe", "expected true or false"),
            ("target=/x,tmpfs-size=lots", "lots"),
        ] {
            let found = text.parse::<Mount>().expect_err(text);
            assert!(found.contains(wanted), "{text}: {found}");
        }
        for (text, wanted) in [
            (
                "type=bind,source=rel,target=/x",
                "absolute path on the node",
            ),
            ("type=volume,source=/abs,target=/x", "invalid volume name"),
            ("type=tmpfs,source=a,target=/x", "no source"),
            ("type=bind,source=/a,target=x", "not an absolute path"),
            (
                "type=bind,source=/a,target=/x,tmpfs-size=1M",
                "tmpfs-size is for",
            ),
        ] {
            let found = mount(text).validate().expect_err(text);
            assert_eq!(found.field, "--mount");
            assert!(found.message.contains(wanted), "{text}: {found}");
        }
        let twice = [mount("target=/x"), mount("type=tmpfs,target=/x/")];
        assert!(validate_mounts(&twice).is_err());
    }
}
