//! The container options of `service create` and `service update` (`--user`, `--workdir`,
//! `--entrypoint`, `--hostname`, `--dns`, `--host`, `--stop-signal`...), named and read as
//! `docker service create` and `update` take them.

use std::net::IpAddr;

use clap::Args;
use essaim_core::model::{ContainerOptions, HostMapping, Ulimit};
use essaim_core::units::parse_key_value;

use super::{parse_command_args, CommandArgs};

/// `true`, `false`, or nothing (true), as Docker's boolean flags of `service update` read.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn parse_host(text: &str) -> Result<HostMapping, String> {
    text.parse()
}

#[derive(Debug, Default, Args)]
pub struct ContainerArgs {
    /// Replace the image's entrypoint (split at spaces; quote with ' or "); the task's
    /// arguments follow it
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true, value_parser = parse_command_args)]
    pub entrypoint: Option<CommandArgs>,
    /// Run as this user: name or UID, optionally :group
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// An additional group to run with (name or GID; repeatable)
    #[arg(long, value_name = "GROUP")]
    pub group: Vec<String>,
    /// The directory the program starts in
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The container's host name
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// A name server for names the cluster does not know (repeatable)
    #[arg(long, value_name = "IP")]
    pub dns: Vec<IpAddr>,
    /// A DNS search domain (repeatable)
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// A resolver option, like ndots:2 (repeatable)
    #[arg(long, value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// A line of /etc/hosts: HOST:IP (repeatable); docker service create's --host, named as
    /// docker run names it, since --host (-H) is the daemon to talk to
    #[arg(long, value_name = "HOST:IP", value_parser = parse_host)]
    pub add_host: Vec<HostMapping>,
    /// A label of the containers, not of the service (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub container_label: Vec<(String, String)>,
    /// The signal that asks a task to stop (default SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Mount the container's root file system read-only
    #[arg(long)]
    pub read_only: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Add a Linux capability, like NET_ADMIN (repeatable)
    #[arg(long, value_name = "CAPABILITY")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability, or ALL (repeatable)
    #[arg(long, value_name = "CAPABILITY")]
    pub cap_drop: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD], like nofile=1024:2048 (repeatable)
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = parse_ulimit)]
    pub ulimit: Vec<Ulimit>,
    /// A kernel setting of the container, like net.core.somaxconn=1024 (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub sysctl: Vec<(String, String)>,
    /// Where the engine sends the containers' output (the engine's default when not given)
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// An option of the log driver (KEY=VALUE, repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub log_opt: Vec<(String, String)>,
}

fn parse_ulimit(text: &str) -> Result<Ulimit, String> {
    text.parse()
}

impl ContainerArgs {
    pub fn options(self) -> ContainerOptions {
        ContainerOptions {
            entrypoint: self.entrypoint.map(|e| e.0).unwrap_or_default(),
            user: self.user.unwrap_or_default(),
            groups: self.group,
            workdir: self.workdir.unwrap_or_default(),
            hostname: self.hostname.unwrap_or_default(),
            dns: self.dns,
            dns_search: self.dns_search,
            dns_options: self.dns_option,
            hosts: self.add_host,
            labels: self.container_label.into_iter().collect(),
            stop_signal: self.stop_signal.unwrap_or_default(),
            init: self.init,
            read_only: self.read_only,
            tty: self.tty,
            cap_add: self.cap_add,
            cap_drop: self.cap_drop,
            ulimits: self.ulimit,
            sysctls: self.sysctl.into_iter().collect(),
            log_driver: self.log_driver.unwrap_or_default(),
            log_options: self.log_opt.into_iter().collect(),
        }
    }
}

/// The container options `service update` changes: a value replaces (an empty one goes back
/// to the image's), lists take `-add` and `-rm`.
#[derive(Debug, Default, Args)]
pub struct ContainerChanges {
    /// Replace the image's entrypoint ("" for the image's own)
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true, value_parser = parse_command_args)]
    pub entrypoint: Option<CommandArgs>,
    /// Run as this user: name or UID, optionally :group ("" for the image's)
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Add an additional group
    #[arg(long, value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Remove an additional group
    #[arg(long, value_name = "GROUP")]
    pub group_rm: Vec<String>,
    /// The directory the program starts in ("" for the image's)
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The container's host name ("" for the default)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Add a name server
    #[arg(long, value_name = "IP")]
    pub dns_add: Vec<IpAddr>,
    /// Remove a name server
    #[arg(long, value_name = "IP")]
    pub dns_rm: Vec<IpAddr>,
    /// Add a DNS search domain
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search_rm: Vec<String>,
    /// Add a resolver option
    #[arg(long, value_name = "OPTION")]
    pub dns_option_add: Vec<String>,
    /// Remove a resolver option
    #[arg(long, value_name = "OPTION")]
    pub dns_option_rm: Vec<String>,
    /// Add or replace a line of /etc/hosts: HOST:IP
    #[arg(long, value_name = "HOST:IP", value_parser = parse_host)]
    pub host_add: Vec<HostMapping>,
    /// Remove the lines of a host: HOST (or HOST:IP)
    #[arg(long, value_name = "HOST")]
    pub host_rm: Vec<String>,
    /// Add or replace a container label (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub container_label_add: Vec<(String, String)>,
    /// Remove a container label
    #[arg(long, value_name = "KEY")]
    pub container_label_rm: Vec<String>,
    /// The signal that asks a task to stop ("" for SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Run an init in the container (--init, or --init=false)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub init: Option<bool>,
    /// Mount the root file system read-only (--read-only, or --read-only=false)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub read_only: Option<bool>,
    /// Allocate a pseudo-TTY (--tty, or --tty=false)
    #[arg(short, long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_bool)]
    pub tty: Option<bool>,
    /// Add a Linux capability
    #[arg(long, value_name = "CAPABILITY")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability
    #[arg(long, value_name = "CAPABILITY")]
    pub cap_drop: Vec<String>,
    /// Add or replace a resource limit: NAME=SOFT[:HARD]
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = parse_ulimit)]
    pub ulimit_add: Vec<Ulimit>,
    /// Remove a resource limit, by name
    #[arg(long, value_name = "NAME")]
    pub ulimit_rm: Vec<String>,
    /// Add or replace a kernel setting (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub sysctl_add: Vec<(String, String)>,
    /// Remove a kernel setting
    #[arg(long, value_name = "KEY")]
    pub sysctl_rm: Vec<String>,
    /// Where the engine sends the output ("" for the engine's default); replaces the options
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// The log driver's options (KEY=VALUE, repeatable): they replace the current ones
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub log_opt: Vec<(String, String)>,
}

/// A list flag's removal that finds nothing: `(flag, what, value)`.
pub type Absent = (&'static str, &'static str, String);

impl ContainerChanges {
    /// `options` as these flags change them; removals before additions.
    ///
    /// # Errors
    /// A `-rm` of something the options do not have.
    pub fn apply(&self, options: &mut ContainerOptions) -> Result<(), Absent> {
        fn remove<T: PartialEq + Clone>(
            list: &mut Vec<T>,
            gone: &[T],
            flag: &'static str,
            what: &'static str,
            show: impl Fn(&T) -> String,
        ) -> Result<(), Absent> {
            for item in gone {
                let before = list.len();
                list.retain(|x| x != item);
                if list.len() == before {
                    return Err((flag, what, show(item)));
                }
            }
            Ok(())
        }
        fn add<T: PartialEq + Clone>(list: &mut Vec<T>, new: &[T]) {
            for item in new {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        let set = |field: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                field.clone_from(value);
            }
        };
        if let Some(entrypoint) = &self.entrypoint {
            options.entrypoint.clone_from(&entrypoint.0);
        }
        set(&mut options.user, &self.user);
        set(&mut options.workdir, &self.workdir);
        set(&mut options.hostname, &self.hostname);
        set(&mut options.stop_signal, &self.stop_signal);
        remove(
            &mut options.groups,
            &self.group_rm,
            "--group-rm",
            "group",
            Clone::clone,
        )?;
        add(&mut options.groups, &self.group_add);
        remove(
            &mut options.dns,
            &self.dns_rm,
            "--dns-rm",
            "name server",
            ToString::to_string,
        )?;
        add(&mut options.dns, &self.dns_add);
        remove(
            &mut options.dns_search,
            &self.dns_search_rm,
            "--dns-search-rm",
            "search domain",
            Clone::clone,
        )?;
        add(&mut options.dns_search, &self.dns_search_add);
        remove(
            &mut options.dns_options,
            &self.dns_option_rm,
            "--dns-option-rm",
            "resolver option",
            Clone::clone,
        )?;
        add(&mut options.dns_options, &self.dns_option_add);
        for host in &self.host_rm {
            let before = options.hosts.len();
            // HOST removes every line of the host; HOST:IP that line only.
            options
                .hosts
                .retain(|h| h.host != *host && h.to_string() != *host);
            if options.hosts.len() == before {
                return Err(("--host-rm", "host", host.clone()));
            }
        }
        for mapping in &self.host_add {
            // A host named again points elsewhere: one address per host.
            options.hosts.retain(|h| h.host != mapping.host);
            options.hosts.push(mapping.clone());
        }
        for key in &self.container_label_rm {
            if options.labels.remove(key).is_none() {
                return Err(("--container-label-rm", "container label", key.clone()));
            }
        }
        options
            .labels
            .extend(self.container_label_add.iter().cloned());
        if let Some(init) = self.init {
            options.init = init;
        }
        if let Some(read_only) = self.read_only {
            options.read_only = read_only;
        }
        if let Some(tty) = self.tty {
            options.tty = tty;
        }
        // As Docker's update: adding a capability takes it off the drop list, and the reverse.
        for capability in &self.cap_add {
            options.cap_drop.retain(|c| c != capability);
        }
        for capability in &self.cap_drop {
            options.cap_add.retain(|c| c != capability);
        }
        add(&mut options.cap_add, &self.cap_add);
        add(&mut options.cap_drop, &self.cap_drop);
        for name in &self.ulimit_rm {
            let before = options.ulimits.len();
            options.ulimits.retain(|u| u.name != *name);
            if options.ulimits.len() == before {
                return Err(("--ulimit-rm", "ulimit", name.clone()));
            }
        }
        for ulimit in &self.ulimit_add {
            options.ulimits.retain(|u| u.name != ulimit.name);
            options.ulimits.push(ulimit.clone());
        }
        for key in &self.sysctl_rm {
            if options.sysctls.remove(key).is_none() {
                return Err(("--sysctl-rm", "sysctl", key.clone()));
            }
        }
        options.sysctls.extend(self.sysctl_add.iter().cloned());
        // As Docker's update: a new driver starts with no options, new options replace all.
        if let Some(driver) = &self.log_driver {
            options.log_driver.clone_from(driver);
            options.log_options.clear();
        }
        if !self.log_opt.is_empty() {
            options.log_options = self.log_opt.iter().cloned().collect();
        }
        Ok(())
    }
}
