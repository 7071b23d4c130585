//! How a task's program is set up beyond its image and command: the options of
//! `docker service create` that Swarm keeps in its container spec (`--user`, `--workdir`,
//! `--entrypoint`, `--hostname`, `--dns`, `--host`, `--stop-signal`...). An empty value keeps
//! the image's own (or the runtime's default).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::service::SpecError;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOptions {
    /// Replaces the image's entrypoint (`--entrypoint`); the task's arguments follow it.
    pub entrypoint: Vec<String>,
    /// `--user`: `user`, `user:group`, by name or number.
    pub user: String,
    /// `--group`: supplementary groups, by name or number.
    pub groups: Vec<String>,
    /// `--workdir`: the directory the program starts in.
    pub workdir: String,
    /// `--hostname`.
    pub hostname: String,
    /// `--dns`: name servers for names the cluster does not know.
    pub dns: Vec<IpAddr>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`, as resolv.conf takes them (`ndots:2`).
    pub dns_options: Vec<String>,
    /// `--host HOST:IP`: lines of the task's `/etc/hosts`.
    pub hosts: Vec<HostMapping>,
    /// `--container-label`: labels of the container, not of the service.
    pub labels: BTreeMap<String, String>,
    /// `--stop-signal`: what asks the program to stop, before the grace period ends in a
    /// kill; SIGTERM when empty (Docker: the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: String,
    /// `--init`: an init process reaps the program's orphans and forwards signals.
    pub init: bool,
    /// `--read-only`: the root file system is mounted read-only.
    pub read_only: bool,
    /// `--tty`: a pseudo-terminal.
    pub tty: bool,
    /// `--cap-add` and `--cap-drop`: Linux capabilities, as Docker names them (`NET_ADMIN`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--ulimit nofile=1024:2048`: resource limits of the program.
    pub ulimits: Vec<Ulimit>,
    /// `--sysctl net.core.somaxconn=1024`: kernel settings of the container's namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// `--log-driver` and `--log-opt`: where the engine sends the output (its default when
    /// empty).
    pub log_driver: String,
    pub log_options: BTreeMap<String, String>,
}

/// One `--ulimit`: `NAME=SOFT[:HARD]` (the hard limit is the soft one when left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// The limits `--ulimit` knows, as Docker names them.
pub const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl std::fmt::Display for Ulimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.name, self.soft, self.hard)
    }
}

impl std::str::FromStr for Ulimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, limits) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not NAME=SOFT[:HARD]"))?;
        if !ULIMITS.contains(&name) {
            return Err(format!(
                "unknown limit {name:?} (limits: {})",
                ULIMITS.join(", ")
            ));
        }
        let number = |part: &str| {
            part.parse::<i64>()
                .map_err(|_| format!("{part:?} in {text:?} is not a number (-1: unlimited)"))
        };
        let (soft, hard) = match limits.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => (number(limits)?, number(limits)?),
        };
        if hard >= 0 && (soft < 0 || soft > hard) {
            return Err(format!("{text:?}: the soft limit is above the hard one"));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }
}

/// One `/etc/hosts` line: `--host db.local:10.0.0.9`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMapping {
    pub host: String,
    pub address: IpAddr,
}

impl std::fmt::Display for HostMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.address)
    }
}

impl std::str::FromStr for HostMapping {
    type Err = String;

    /// `HOST:IP` as Docker's `--host` takes it (`HOST=IP` too, as compose files may write
    /// it); an IPv6 address is everything after the first separator.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, address) = text
            .split_once([':', '='])
            .ok_or_else(|| format!("{text:?} is not HOST:IP"))?;
        let address = address.trim_start_matches('[').trim_end_matches(']');
        let address = address
            .parse()
            .map_err(|_| format!("{address:?} in {text:?} is not an IP address"))?;
        check_host_name(host).map_err(|e| format!("{e} in {text:?}"))?;
        Ok(HostMapping {
            host: host.to_string(),
            address,
        })
    }
}

/// Linux's signal numbers by name, for `--stop-signal` (also given as `TERM` or `15`).
const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGABRT", 6),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGWINCH", 28),
    ("SIGPWR", 30),
];

/// The number of a signal named as Docker takes it: `SIGTERM`, `TERM`, `sigterm` or `15`.
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(number) = name.parse::<i32>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS.iter().find(|(n, _)| *n == full).map(|(_, n)| *n)
}

fn check_host_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|part| !part.is_empty() && part.len() <= 63)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid host name {name:?}: use letters, digits, '-' and '.'"
        ))
    }
}

fn error(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A user or group as `--user` and `--group` take it: a name or a number.
fn check_account(field: &str, what: &str, text: &str) -> Result<(), SpecError> {
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(())
    } else {
        Err(error(
            field,
            format!("invalid {what} {text:?}: a name or a number"),
        ))
    }
}

impl ContainerOptions {
    /// Checks each option, naming it by its flag.
    ///
    /// # Errors
    /// The first option that is wrong.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.entrypoint.first().is_some_and(|p| p.trim().is_empty()) {
            return Err(error("--entrypoint", "the program must not be empty"));
        }
        if !self.user.is_empty() {
            let (user, group) = match self.user.split_once(':') {
                Some((user, group)) => (user, Some(group)),
                None => (self.user.as_str(), None),
            };
            check_account("--user", "user", user)?;
            if let Some(group) = group {
                check_account("--user", "group", group)?;
            }
        }
        for group in &self.groups {
            check_account("--group", "group", group)?;
        }
        if !self.workdir.is_empty() && !self.workdir.starts_with('/') {
            return Err(error(
                "--workdir",
                format!("{:?} is not an absolute path", self.workdir),
            ));
        }
        if crate::template::has_placeholders(&self.hostname) {
            // Checked as a name once filled in, on the node (see `crate::template`).
            crate::template::check(&self.hostname).map_err(|e| error("--hostname", e))?;
        } else if !self.hostname.is_empty() {
            check_host_name(&self.hostname).map_err(|e| error("--hostname", e))?;
        }
        for domain in &self.dns_search {
            check_host_name(domain).map_err(|e| error("--dns-search", e))?;
        }
        for option in &self.dns_options {
            if option.is_empty() || option.contains(char::is_whitespace) {
                return Err(error(
                    "--dns-option",
                    format!("invalid option {option:?}: one word, like ndots:2"),
                ));
            }
        }
        for mapping in &self.hosts {
            check_host_name(&mapping.host).map_err(|e| error("--host", e))?;
        }
        for key in self.labels.keys() {
            if key.is_empty() {
                return Err(error("--container-label", "a label needs a key"));
            }
        }
        if !self.stop_signal.is_empty() && signal_number(&self.stop_signal).is_none() {
            return Err(error(
                "--stop-signal",
                format!("unknown signal {:?}", self.stop_signal),
            ));
        }
        for ulimit in &self.ulimits {
            ulimit
                .to_string()
                .parse::<Ulimit>()
                .map_err(|e| error("--ulimit", e))?;
        }
        for key in self.sysctls.keys() {
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(error("--sysctl", format!("invalid setting {key:?}")));
            }
        }
        if self.log_driver.is_empty() && !self.log_options.is_empty() {
            // Docker's options are the driver's: without one they would meet the engine's
            // default driver, which may not take them.
            return Err(error("--log-opt", "options need a --log-driver"));
        }
        for (field, capabilities) in [("--cap-add", &self.cap_add), ("--cap-drop", &self.cap_drop)]
        {
            for capability in capabilities {
                let name = capability.trim_start_matches("CAP_");
                let ok = name == "ALL"
                    || (!name.is_empty()
                        && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
                if !ok {
                    return Err(error(
                        field,
                        format!("invalid capability {capability:?}: like NET_ADMIN or ALL"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The options only a container runtime can apply, by flag: the process runtime runs
    /// programs without a UTS namespace, a root file system or capabilities of their own.
    pub fn container_only(&self) -> Vec<&'static str> {
        let set = [
            ("--hostname", !self.hostname.is_empty()),
            ("--dns", !self.dns.is_empty()),
            ("--dns-search", !self.dns_search.is_empty()),
            ("--dns-option", !self.dns_options.is_empty()),
            ("--host", !self.hosts.is_empty()),
            ("--init", self.init),
            ("--read-only", self.read_only),
            ("--tty", self.tty),
            ("--cap-add", !self.cap_add.is_empty()),
            ("--cap-drop", !self.cap_drop.is_empty()),
            ("--sysctl", !self.sysctls.is_empty()),
            ("--log-driver", !self.log_driver.is_empty()),
        ];
        set.into_iter()
            .filter_map(|(flag, on)| on.then_some(flag))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_docker_takes_them() {
        for name in ["SIGTERM", "TERM", "sigterm", "15"] {
            assert_eq!(signal_number(name), Some(15), "{name}");
        }
        assert_eq!(signal_number("SIGUSR1"), Some(10));
        for bad in ["", "SIGNOPE", "0", "65", "-1"] {
            assert_eq!(signal_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_mappings_read_host_colon_ip_and_refuse_the_rest() {
        let mapping: HostMapping = "db.local:10.0.0.9".parse().expect("valid");
        assert_eq!(mapping.host, "db.local");
        assert_eq!(mapping.to_string(), "db.local:10.0.0.9");
        let v6: HostMapping = "v6=::1".parse().expect("valid");
        assert_eq!(v6.address, "::1".parse::<IpAddr>().expect("ip"));
        for bad in ["db", "db:nope", ":10.0.0.1", "bad host:10.0.0.1"] {
            assert!(bad.parse::<HostMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_bad_option_is_named_by_its_flag() {
        let cases: [(&str, ContainerOptions); 7] = [
            (
                "--user",
                ContainerOptions {
                    user: "a b".into(),
                    ..Default::default()
                },
            ),
            (
                "--user",
                ContainerOptions {
                    user: "app:".into(),
                    ..Default::default()
                },
            ),
            (
                "--workdir",
                ContainerOptions {
                    workdir: "srv".into(),
                    ..Default::default()
                },
            ),
            (
                "--hostname",
                ContainerOptions {
                    hostname: "-x".into(),
                    ..Default::default()
                },
            ),
            (
                "--stop-signal",
                ContainerOptions {
                    stop_signal: "SIGNOPE".into(),
                    ..Default::default()
                },
            ),
            (
                "--cap-add",
                ContainerOptions {
                    cap_add: vec!["net admin".into()],
                    ..Default::default()
                },
            ),
            (
                "--entrypoint",
                ContainerOptions {
                    entrypoint: vec![" ".into()],
                    ..Default::default()
                },
            ),
        ];
        for (flag, options) in cases {
            let found = options.validate().expect_err(flag);
            assert_eq!(found.field, flag, "{found}");
        }
        let good = ContainerOptions {
            user: "1000:1000".into(),
            groups: vec!["audio".into()],
            workdir: "/srv".into(),
            hostname: "web-1".into(),
            stop_signal: "SIGQUIT".into(),
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn only_what_needs_a_container_is_container_only() {
        let options = ContainerOptions {
            user: "app".into(),
            workdir: "/srv".into(),
            stop_signal: "SIGINT".into(),
            hostname: "web".into(),
            read_only: true,
            ..Default::default()
        };
        assert_eq!(options.container_only(), vec!["--hostname", "--read-only"]);
        assert!(ContainerOptions::default().container_only().is_empty());
    }
}
