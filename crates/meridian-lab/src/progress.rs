//! Progress on the terminal while a run goes on: one line per event, and a live status line
//! (phase, elapsed, request rate, errors) rewritten in place on a terminal or printed every few
//! seconds otherwise.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Writes progress to stderr.
pub struct Progress {
    start: Instant,
    tty: bool,
    quiet: bool,
    live_shown: bool,
    last_plain: Option<Instant>,
}

/// How often a non-terminal gets a status line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress to stderr; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            quiet,
            live_shown: false,
            last_plain: None,
        }
    }

    fn clear_live(&mut self, err: &mut impl std::io::Write) {
        if self.live_shown {
            let _ = write!(err, "\r\x1b[2K");
            self.live_shown = false;
        }
    }

    /// Prints an event line, stamped with the time since the run began.
    pub fn event(&mut self, message: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        self.clear_live(&mut err);
        let _ = writeln!(
            err,
            "[{:>6.1}s] {message}",
            self.start.elapsed().as_secs_f64()
        );
    }

    /// Updates the live status line.
    pub fn live(&mut self, status: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            self.clear_live(&mut err);
            let _ = write!(
                err,
                "[{:>6.1}s] {status}",
                self.start.elapsed().as_secs_f64()
            );
            let _ = err.flush();
            self.live_shown = true;
        } else if self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            self.last_plain = Some(Instant::now());
            let _ = writeln!(
                err,
                "[{:>6.1}s] {status}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    /// Ends the live line so later output starts on a fresh line.
    pub fn finish(&mut self) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        self.clear_live(&mut err);
    }
}
