//! Colors and the terminal: whether to color at all (a terminal, and no `NO_COLOR`), the tone
//! each state word takes, and the terminal's width for tables.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use nu_ansi_term::{Color, Style};

/// Set once at start-up; tests leave it off, so rendered text has no escape codes.
static COLOR: AtomicBool = AtomicBool::new(false);

/// Colors on when stdout and stderr are both terminals (results go to one, notes and
/// progress to the other), `NO_COLOR` is unset or empty, and `TERM` is not `dumb`.
pub fn init() {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
    let terminals = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    COLOR.store(terminals && !no_color && !dumb, Ordering::Relaxed);
}

pub fn color() -> bool {
    COLOR.load(Ordering::Relaxed)
}

/// How a word should look: what a state means to the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Running, ready, converged.
    Good,
    /// Failed, rejected, down, unreachable.
    Bad,
    /// On its way: pending, starting, draining.
    Busy,
    /// Of less interest: history, hints.
    Dim,
}

impl Tone {
    /// The tone of a state word as tables show it (`Running`, `Failed 3 seconds ago`...),
    /// read from its first word.
    pub fn of_state(text: &str) -> Tone {
        let word = text
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match word.as_str() {
            "running" | "ready" | "active" | "leader" | "reachable" | "completed" | "converged" => {
                Tone::Good
            }
            "failed" | "rejected" | "down" | "unreachable" | "orphaned" | "unavailable" => {
                Tone::Bad
            }
            "new" | "pending" | "assigned" | "accepted" | "preparing" | "starting" | "drain"
            | "pause" | "unknown" | "remove" | "shutdown" => Tone::Busy,
            "complete" => Tone::Good,
            _ => Tone::Plain,
        }
    }

    fn style(self) -> Option<Style> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some(Color::Green.normal()),
            Tone::Bad => Some(Color::Red.bold()),
            Tone::Busy => Some(Color::Yellow.normal()),
            Tone::Dim => Some(Style::new().dimmed()),
        }
    }

    /// The comfy-table color of this tone, for table cells.
    pub fn cell_color(self) -> Option<comfy_table::Color> {
        match self {
            Tone::Good => Some(comfy_table::Color::Green),
            Tone::Bad => Some(comfy_table::Color::Red),
            Tone::Busy => Some(comfy_table::Color::Yellow),
            Tone::Dim => Some(comfy_table::Color::DarkGrey),
            Tone::Plain => None,
        }
    }
}

/// `text` in `tone`, when colors are on; as is otherwise.
pub fn paint(text: &str, tone: Tone) -> String {
    match tone.style() {
        Some(style) if color() => style.paint(text).to_string(),
        _ => text.to_string(),
    }
}

/// `text` in bold, when colors are on.
pub fn bold(text: &str) -> String {
    if color() {
        Style::new().bold().paint(text).to_string()
    } else {
        text.to_string()
    }
}

/// The width of the terminal stdout writes to, if it is one.
pub fn terminal_width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, on a valid fd.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col)
}

/// True when the user can be asked a question: stdin and stderr are both terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_take_the_tone_of_what_they_mean() {
        assert_eq!(Tone::of_state("Running 3 seconds ago"), Tone::Good);
        assert_eq!(Tone::of_state("Failed"), Tone::Bad);
        assert_eq!(Tone::of_state("Pending (no suitable node)"), Tone::Busy);
        assert_eq!(Tone::of_state("Ready"), Tone::Good);
        assert_eq!(Tone::of_state("Down"), Tone::Bad);
        assert_eq!(Tone::of_state("web.1"), Tone::Plain);
    }

    #[test]
    fn nothing_is_painted_when_colors_are_off() {
        assert_eq!(paint("Running", Tone::Good), "Running");
    }
}
