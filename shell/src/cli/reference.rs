//! The command reference of `docs/cli.md`, written from the command table so that it cannot
//! drift: a test compares the page with [`markdown`] (and rewrites it when asked, with
//! `ESSAIM_BLESS_DOCS=1`).

use std::fmt::Write;

/// Where the generated part of `docs/cli.md` starts and ends.
pub const START: &str = "<!-- command reference: generated from shell/src/cli.rs, do not edit -->";
pub const END: &str = "<!-- end of command reference -->";

/// Every command under `root`, depth first, as Markdown sections.
pub fn markdown(root: &clap::Command) -> String {
    let mut text = String::new();
    let mut path = vec![root.get_name().to_string()];
    for command in root.get_subcommands() {
        section(command, &mut path, &mut text);
    }
    text
}

fn section(command: &clap::Command, path: &mut Vec<String>, text: &mut String) {
    if command.get_name() == "help" || command.is_hide_set() {
        return;
    }
    path.push(command.get_name().to_string());
    let name = path.join(" ");
    let _ = writeln!(text, "### `{name}`\n");
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        let _ = writeln!(text, "{}\n", about.to_string().trim());
    }
    let aliases: Vec<&str> = command.get_visible_aliases().collect();
    if !aliases.is_empty() {
        let _ = writeln!(text, "Also: `{}`.\n", aliases.join("`, `"));
    }
    let mut usage = command.clone().bin_name(&name).render_usage().to_string();
    usage = usage.trim_start_matches("Usage: ").trim().to_string();
    let _ = writeln!(text, "```\n{usage}\n```\n");
    let rows: Vec<(String, String)> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !arg.is_global_set())
        .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
        .map(|arg| (flag(arg), describe(arg)))
        .collect();
    if !rows.is_empty() {
        text.push_str("| argument | meaning |\n| --- | --- |\n");
        for (flag, meaning) in rows {
            let _ = writeln!(text, "| `{flag}` | {} |", meaning.replace('|', "\\|"));
        }
        text.push('\n');
    }
    if let Some(examples) = command.get_after_long_help() {
        let examples = examples.to_string();
        let body: Vec<&str> = examples
            .lines()
            .skip_while(|line| line.trim() == "Examples:")
            .collect();
        let _ = writeln!(text, "Examples:\n\n```\n{}\n```\n", dedent(&body));
    }
    for sub in command.get_subcommands() {
        section(sub, path, text);
    }
    path.pop();
}

/// `-r, --replicas <N>` or `<SERVICE>...`.
fn flag(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|names| {
            names
                .iter()
                .map(|name| format!("<{name}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase()));
    let takes_value = !matches!(
        arg.get_action(),
        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
    );
    if arg.is_positional() {
        let repeat = if matches!(arg.get_action(), clap::ArgAction::Append) {
            "..."
        } else {
            ""
        };
        return format!("{value}{repeat}");
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let mut flag = names.join(", ");
    if takes_value {
        flag.push(' ');
        flag.push_str(&value);
    }
    flag
}

/// The argument's help, with its possible values and default.
fn describe(arg: &clap::Arg) -> String {
    let mut text = arg
        .get_help()
        .map(|help| help.to_string())
        .unwrap_or_default();
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|value| !value.is_hide_set())
        .map(|value| value.get_name().to_string())
        .collect();
    if !possible.is_empty() && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        let _ = write!(text, " (one of: {})", possible.join(", "));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        let _ = write!(text, " [default: {}]", defaults.join(", "));
    }
    if arg.is_required_set() && !arg.is_positional() {
        text.push_str(" (required)");
    }
    text
}

/// The lines without the indentation they share.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|line| line.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn docs_cli_md_holds_the_command_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
        let page = std::fs::read_to_string(&path).expect("docs/cli.md");
        let (Some(start), Some(end)) = (page.find(START), page.find(END)) else {
            panic!("docs/cli.md lacks the markers {START:?} and {END:?}");
        };
        let generated = format!("{START}\n\n{}", markdown(&Cli::command()));
        let current = &page[start..end];
        if current != generated {
            if std::env::var_os("ESSAIM_BLESS_DOCS").is_some() {
                let page = format!("{}{generated}{}", &page[..start], &page[end..]);
                std::fs::write(&path, page).expect("docs/cli.md written");
                return;
            }
            panic!(
                "docs/cli.md's command reference differs from the command table: run \
                 `ESSAIM_BLESS_DOCS=1 cargo test -p essaim-shell docs_cli_md` and commit it"
            );
        }
    }

    #[test]
    fn every_command_has_a_section_and_its_flags() {
        let text = markdown(&Cli::command());
        assert!(text.contains("### `essaim service create`"));
        assert!(text.contains("### `essaim swarm ca issue-client`"));
        assert!(text.contains("| `-d, --detach` |"));
        assert!(text.contains("$ essaim service scale web=5 api=2"));
        assert!(!text.contains("### `essaim help`"));
    }
}
