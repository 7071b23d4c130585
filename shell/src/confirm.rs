//! Asking before destructive commands: the plan is listed, and only `y` or `yes` goes on.
//! Commands ask only when [`Output::interactive`] (a person at a terminal) and without
//! `--yes`; a script is never stopped by a question.

use crate::render::Output;
use crate::style::{self, Tone};

/// The user answered no: nothing was done. Not a failure (exit 0).
#[derive(Debug)]
pub struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled: nothing was changed")
    }
}

impl std::error::Error for Declined {}

/// Asks before carrying out `plan` (nothing to ask when it is empty).
///
/// # Errors
/// [`Declined`] when the answer is no; the terminal could not be read.
pub fn go_ahead(plan: &[String], output: &mut Output<'_>) -> anyhow::Result<()> {
    if plan.is_empty() || ask(plan, output)? {
        Ok(())
    } else {
        Err(Declined.into())
    }
}

/// Lists `plan` on stderr and asks to go on. Ctrl-C, Ctrl-D and anything but y/yes say no.
///
/// # Errors
/// The terminal could not be read.
fn ask(plan: &[String], output: &mut Output<'_>) -> anyhow::Result<bool> {
    let mut text = String::from("This will:\n");
    for step in plan {
        text.push_str(&format!("  - {step}\n"));
    }
    output.note(&text);
    // The question goes to the terminal itself, not to stdout, which may be a file.
    let config = rustyline::Config::builder()
        .behavior(rustyline::config::Behavior::PreferTerm)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config)?;
    let question = "Continue? [y/N] ";
    let styled = style::paint(question, Tone::Busy);
    let yes = match editor.readline(&(question, styled.as_str())) {
        Ok(answer) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        Err(
            rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof,
        ) => false,
        Err(error) => return Err(error.into()),
    };
    if !yes {
        output.note("Cancelled: nothing was changed.\n");
    }
    Ok(yes)
}
