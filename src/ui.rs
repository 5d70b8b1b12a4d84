//! What hb shows people: verbosity, colour, progress bars. Machine-readable output (`--json`)
//! goes to stdout and silences everything else that would go there.

use crate::env_vars::NO_COLOR;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Shared by every command; cheap to pass around by reference.
pub struct Ui {
    pub verbosity: Verbosity,
    pub json: bool,
    pub color: bool,
    multi: MultiProgress,
    /// Progress bars are drawn only on a terminal and never with `-q`.
    bars_visible: bool,
}

impl Ui {
    pub fn new(verbosity: Verbosity, json: bool, color: ColorChoice) -> Ui {
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => std::env::var_os(NO_COLOR).is_none() && std::io::stderr().is_terminal(),
        };
        let multi = MultiProgress::new();
        let bars_visible = verbosity != Verbosity::Quiet && std::io::stderr().is_terminal();
        if !bars_visible {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Ui {
            verbosity,
            json,
            color,
            multi,
            bars_visible,
        }
    }

    /// A line of human-readable status on stderr (not shown with `-q`).
    pub fn status(&self, message: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.line(message);
        }
    }

    fn line(&self, message: &str) {
        if self.bars_visible {
            let _ = self.multi.println(message);
        } else {
            eprintln!("{message}");
        }
    }

    /// A warning on stderr; shown even with `-q`.
    pub fn warn(&self, message: &str) {
        let prefix = if self.color {
            "\x1b[33mwarning:\x1b[0m"
        } else {
            "warning:"
        };
        self.multi.suspend(|| eprintln!("{prefix} {message}"));
    }

    pub fn debug(&self, message: &str) {
        if self.verbosity >= Verbosity::Verbose {
            self.line(message);
        }
    }

    /// An overall bar counting finished units of work.
    pub fn bar(&self, total: u64, prefix: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        let template = if self.color {
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed})"
        } else {
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A spinner whose message says what long work is doing now.
    pub fn spinner(&self, prefix: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})").expect("valid template"));
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A byte-counting bar for downloads.
    pub fn download_bar(&self) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("fetch {msg} {bytes}/{total_bytes} ({bytes_per_sec})")
                .expect("valid template"),
        );
        bar
    }

    /// Print the final `--json` document on stdout.
    pub fn print_json(&self, value: &serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("json values always serialize")
        );
    }
}

/// Adapter so `fetch` can report into an indicatif bar without knowing indicatif.
pub struct FetchProgress<'a>(pub &'a Ui, pub std::sync::Mutex<Option<ProgressBar>>);

impl crate::fetch::Progress for FetchProgress<'_> {
    fn start(&self, name: &str, total: Option<u64>) {
        let bar = self.0.download_bar();
        bar.set_length(total.unwrap_or(0));
        bar.set_message(name.to_string());
        *self.1.lock().expect("progress lock") = Some(bar);
    }
    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.1.lock().expect("progress lock") {
            bar.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.1.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
