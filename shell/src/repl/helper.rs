//! The line editor's helper: TAB completion from the command table and the name cache,
//! hints from history, and the validator that lets an unfinished Rhai block or string go on
//! to the next line.

use std::borrow::Cow;

use clap::CommandFactory;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::{Hinter, HistoryHinter};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::Context;

use super::cache::{Cache, Snapshot};
use crate::cli::Cli;
use crate::style::{self, Tone};

/// Words the REPL takes besides the commands of the table.
pub const REPL_WORDS: [&str; 3] = ["exit", "quit", "help"];

pub struct Helper {
    commands: clap::Command,
    cache: Cache,
    hinter: HistoryHinter,
    engine: rhai::Engine,
}

impl Helper {
    pub fn new(cache: Cache) -> Helper {
        Helper {
            commands: Cli::command(),
            cache,
            hinter: HistoryHinter::new(),
            engine: rhai::Engine::new_raw(),
        }
    }
}

impl rustyline::Helper for Helper {}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = complete(&self.commands, &self.cache.snapshot(), line, pos);
        let pairs = words
            .into_iter()
            .map(|word| Pair {
                display: word.trim_end().to_string(),
                replacement: word,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Helper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, ctx: &Context<'_>) -> Option<String> {
        self.hinter.hint(line, pos, ctx)
    }
}

impl Highlighter for Helper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if style::color() {
            Cow::Owned(style::paint(hint, Tone::Dim))
        } else {
            Cow::Borrowed(hint)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        false
    }
}

impl Validator for Helper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let incomplete = if is_command_line(&self.commands, input) {
            // An open quote: the argument goes on on the next line.
            matches!(crate::cli::parse_command_args(input), Err(e) if e.starts_with("unterminated"))
        } else {
            crate::script::is_incomplete(&self.engine, input)
        };
        Ok(if incomplete {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

/// True when `line` starts with a command of the table (or a word of the REPL's own): it is
/// run as a command, not evaluated as Rhai.
pub fn is_command_line(commands: &clap::Command, line: &str) -> bool {
    let Some(first) = line.split_whitespace().next() else {
        return false;
    };
    REPL_WORDS.contains(&first) || find_subcommand(commands, first).is_some()
}

fn find_subcommand<'a>(command: &'a clap::Command, name: &str) -> Option<&'a clap::Command> {
    command
        .get_subcommands()
        .find(|sub| sub.get_name() == name || sub.get_all_aliases().any(|alias| alias == name))
}

/// Completes the word at `pos`: returns where it starts and the candidates (a trailing space
/// when nothing else can follow inside the word).
///
/// Commands and subcommands and flags come from the command table; service, node and task
/// names from `names`, for arguments whose value name says which (SERVICE, NODE, TASK).
/// Candidates that start with the word come first; when none does, those that contain its
/// letters in order.
pub fn complete(
    commands: &clap::Command,
    names: &Snapshot,
    line: &str,
    pos: usize,
) -> (usize, Vec<String>) {
    let before = &line[..pos.min(line.len())];
    let start = before
        .char_indices()
        .rfind(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[start..];
    let done: Vec<&str> = before[..start].split_whitespace().collect();

    // Walk down the table along the words already typed.
    let mut command = commands;
    let mut previous_flag: Option<&clap::Arg> = None;
    let mut positionals = 0;
    for typed in &done {
        if *typed == "help" || *typed == "watch" {
            command = commands;
            continue;
        }
        if let Some(sub) = find_subcommand(command, typed) {
            command = sub;
            positionals = 0;
            previous_flag = None;
            continue;
        }
        if typed.starts_with('-') {
            previous_flag = find_flag(command, typed).filter(|arg| takes_value(arg));
            continue;
        }
        if previous_flag.take().is_none() {
            positionals += 1;
        }
    }

    let candidates: Vec<String> = if done.is_empty() {
        let mut words: Vec<String> = visible_subcommands(commands);
        words.extend(REPL_WORDS.iter().map(|w| format!("{w} ")));
        words.push("watch ".to_string());
        words.sort();
        words.dedup();
        words
    } else if word.starts_with('-') {
        command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long} ")))
            .collect()
    } else if let Some(flag) = previous_flag {
        values_of(flag, names)
    } else if command.has_subcommands() {
        visible_subcommands(command)
    } else {
        let positional = command.get_positionals().nth(positionals).or_else(|| {
            command
                .get_positionals()
                .last()
                .filter(|arg| is_multiple(arg))
        });
        positional.map_or_else(Vec::new, |arg| values_of(arg, names))
    };
    (start, rank(word, candidates))
}

fn visible_subcommands(command: &clap::Command) -> Vec<String> {
    command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .map(|sub| format!("{} ", sub.get_name()))
        .collect()
}

fn find_flag<'a>(command: &'a clap::Command, typed: &str) -> Option<&'a clap::Arg> {
    let name = typed.split_once('=').map_or(typed, |(name, _)| name);
    command.get_arguments().find(|arg| {
        if let Some(long) = name.strip_prefix("--") {
            arg.get_long() == Some(long)
        } else {
            name.len() == 2 && arg.get_short().map(|c| format!("-{c}")).as_deref() == Some(name)
        }
    })
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_none_or(|range| range.takes_values())
        && !matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
        )
}

fn is_multiple(arg: &clap::Arg) -> bool {
    arg.get_num_args()
        .is_some_and(|range| range.max_values() > 1)
        || matches!(arg.get_action(), clap::ArgAction::Append)
}

/// What an argument takes: its possible values, or live names when its value name says.
fn values_of(arg: &clap::Arg, names: &Snapshot) -> Vec<String> {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|value| !value.is_hide_set())
        .map(|value| format!("{} ", value.get_name()))
        .collect();
    if !possible.is_empty() {
        return possible;
    }
    let value_name = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.as_str().to_string())
        .unwrap_or_default();
    let with = |list: &[String], suffix: &str| {
        list.iter()
            .map(|name| format!("{name}{suffix}"))
            .collect::<Vec<_>>()
    };
    match value_name.as_str() {
        "SERVICE=REPLICAS" => with(&names.services, "="),
        name if name.starts_with("SERVICE") => with(&names.services, " "),
        name if name.starts_with("NODE") => with(&names.nodes, " "),
        name if name.starts_with("TASK") => with(&names.tasks, " "),
        _ => Vec::new(),
    }
}

/// The candidates for `word`: those it starts, else those holding its letters in order.
fn rank(word: &str, mut candidates: Vec<String>) -> Vec<String> {
    candidates.sort();
    candidates.dedup();
    let prefixed: Vec<String> = candidates
        .iter()
        .filter(|c| c.starts_with(word))
        .cloned()
        .collect();
    if !prefixed.is_empty() || word.is_empty() {
        return prefixed;
    }
    candidates
        .into_iter()
        .filter(|candidate| {
            let mut letters = candidate.chars();
            word.chars().all(|c| letters.any(|l| l == c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::cache::Health;

    fn names() -> Snapshot {
        Snapshot {
            services: vec!["web".into(), "api".into(), "worker-queue".into()],
            nodes: vec!["node-1".into(), "node-2".into()],
            tasks: vec!["t1abc".into()],
            health: Health::Unknown,
        }
    }

    fn at_end(line: &str) -> Vec<String> {
        complete(&Cli::command(), &names(), line, line.len()).1
    }

    #[test]
    fn commands_then_subcommands_then_flags() {
        assert_eq!(at_end("serv"), vec!["service "]);
        assert!(at_end("").contains(&"node ".to_string()));
        assert!(at_end("").contains(&"exit ".to_string()));
        assert_eq!(at_end("service sc"), vec!["scale "]);
        let flags = at_end("service create --repl");
        assert_eq!(flags, vec!["--replicas ", "--replicas-max-per-node "]);
    }

    #[test]
    fn live_names_where_the_argument_wants_them() {
        assert_eq!(at_end("service ps w"), vec!["web ", "worker-queue "]);
        assert_eq!(at_end("service scale w"), vec!["web=", "worker-queue="]);
        assert_eq!(at_end("node ps node-"), vec!["node-1 ", "node-2 "]);
        // Several services: every argument is one.
        assert_eq!(at_end("service rm web a"), vec!["api "]);
        // The value of a flag is not a positional.
        assert_eq!(at_end("service logs --tail 5 a"), vec!["api "]);
        assert_eq!(at_end("watch service ps a"), vec!["api "]);
    }

    #[test]
    fn flag_values_come_from_the_flag() {
        assert_eq!(
            at_end("service create --mode g"),
            vec!["global ", "global-job "]
        );
        assert_eq!(at_end("service ls --format "), vec!["json ", "table "]);
    }

    #[test]
    fn a_wide_space_before_the_cursor_is_a_word_break_not_a_panic() {
        let line = "service ps\u{a0}w";
        let (start, words) = complete(&Cli::command(), &names(), line, line.len());
        assert_eq!(&line[start..], "w");
        assert_eq!(words, vec!["web ", "worker-queue "]);
    }

    #[test]
    fn no_prefix_match_falls_back_to_letters_in_order() {
        assert_eq!(at_end("service ps wq"), vec!["worker-queue "]);
        assert_eq!(at_end("service ps zz"), Vec::<String>::new());
    }

    #[test]
    fn command_lines_are_told_from_rhai() {
        let commands = Cli::command();
        assert!(is_command_line(&commands, "service ls"));
        assert!(is_command_line(&commands, "  node ls"));
        assert!(is_command_line(&commands, "help service"));
        assert!(!is_command_line(&commands, "1 + 2"));
        assert!(!is_command_line(&commands, "let web = 3"));
    }
}
