//! Users and groups as `--user` and `--group` name them, by name or number, read from the
//! node's `/etc/passwd` and `/etc/group`: what Docker reads in the image, for the process
//! runtime, whose programs run on the node's own file system.

/// Who a task's program runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's groups in `/etc/group`, then `--group`.
    pub groups: Vec<u32>,
}

/// One `name:x:id:...` line's name and numbers; `None` for a line that is not one.
fn fields(line: &str) -> Option<Vec<&str>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(line.split(':').collect())
}

/// `user`, `user:group`, `uid:gid`... as Docker resolves them: a number needs no entry (its
/// group is then 0, unless `/etc/passwd` has it); a name must be there.
///
/// # Errors
/// A name that neither file has, named as the user gave it.
pub fn resolve(
    user: &str,
    groups: &[String],
    passwd: &str,
    group: &str,
) -> Result<Identity, String> {
    let (user, primary) = match user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (user, None),
    };
    let entry = passwd
        .lines()
        .filter_map(fields)
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, own_gid, name) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("user {user}: bad uid in /etc/passwd"))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("user {user}: bad gid in /etc/passwd"))?,
            Some(f[0]),
        ),
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => return Err(format!("user {user:?} not found in /etc/passwd")),
    };
    let group_id = |wanted: &str| -> Result<u32, String> {
        if let Ok(gid) = wanted.parse::<u32>() {
            return Ok(gid);
        }
        group
            .lines()
            .filter_map(fields)
            .find(|f| f.len() >= 3 && f[0] == wanted)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("group {wanted:?} not found in /etc/group"))
    };
    let gid = match primary {
        Some(primary) => group_id(primary)?,
        None => own_gid,
    };
    let mut supplementary: Vec<u32> = match name {
        Some(name) => group
            .lines()
            .filter_map(fields)
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|member| member == name))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    for wanted in groups {
        supplementary.push(group_id(wanted)?);
    }
    supplementary.sort_unstable();
    supplementary.dedup();
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          # a comment\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\naudio:x:29:app,other\nappgroup:x:1001:\nvideo:x:44:\n";

    fn of(user: &str, groups: &[&str]) -> Result<Identity, String> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        resolve(user, &groups, PASSWD, GROUP)
    }

    #[test]
    fn names_and_numbers_resolve_as_docker_resolves_them() {
        assert_eq!(
            of("app", &[]),
            Ok(Identity {
                uid: 1000,
                gid: 1001,
                groups: vec![29]
            })
        );
        assert_eq!(of("1000", &[]).map(|i| i.gid), Ok(1001), "known uid");
        assert_eq!(
            of("4242", &[]),
            Ok(Identity {
                uid: 4242,
                gid: 0,
                groups: vec![]
            }),
            "a number needs no entry"
        );
        assert_eq!(of("app:video", &[]).map(|i| i.gid), Ok(44));
        assert_eq!(of("4242:7", &[]).map(|i| (i.uid, i.gid)), Ok((4242, 7)));
        assert_eq!(
            of("app", &["video", "50"]).map(|i| i.groups),
            Ok(vec![29, 44, 50])
        );
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        assert_eq!(
            of("nobody-here", &[]),
            Err("user \"nobody-here\" not found in /etc/passwd".to_string())
        );
        assert_eq!(
            of("app:nogroup", &[]),
            Err("group \"nogroup\" not found in /etc/group".to_string())
        );
        assert!(of("app", &["nogroup"]).is_err());
    }
}
