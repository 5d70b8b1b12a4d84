//! The hb binary: become the sandbox init if asked to, parse arguments, run, map the result
//! to an exit code. Nothing else lives here.

use clap::Parser;
use std::io::IsTerminal;

fn main() {
    // The sandbox re-executes this binary as its init process; this must come first.
    hb_sandbox::init_if_requested();
    let cli = hb::cli::Cli::parse();
    let json = cli.global.json;
    let filter = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HB_LOG").unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os(hb::env_vars::NO_COLOR).is_none() && std::io::stderr().is_terminal())
        .without_time()
        .init();
    let code = match hb::run(cli) {
        Ok(code) => code,
        Err(error) => {
            report(&error, json);
            error.exit_code()
        }
    };
    std::process::exit(code);
}

/// Print the error chain, then `hint:` lines; recipe errors with their source snippet.
fn report(error: &hb::Error, json: bool) {
    if json {
        let chain: Vec<String> = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect();
        let doc = serde_json::json!({
            "error": chain.first(),
            "causes": &chain[1..],
            "hints": error.hints(),
            "exit_code": error.exit_code(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    let color = std::env::var_os(hb::env_vars::NO_COLOR).is_none() && std::io::stderr().is_terminal();
    if let Some(diagnostic) = error.as_diagnostic() {
        let handler = if color {
            miette::GraphicalReportHandler::new()
        } else {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        };
        let mut out = String::new();
        if handler.render_report(&mut out, diagnostic).is_ok() {
            eprintln!("error: {error}");
            eprint!("{out}");
            return;
        }
    }
    let prefix = if color { "\x1b[31merror:\x1b[0m" } else { "error:" };
    eprintln!("{prefix} {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    for hint in error.hints() {
        eprintln!("hint: {hint}");
    }
}
