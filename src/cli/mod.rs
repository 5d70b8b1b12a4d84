//! Command-line arguments (clap). One file per command, mirroring `src/commands/`; no clap
//! type goes below the commands layer.

mod attest;
mod build;
mod fetch;
mod key;
mod lock;
mod shell;
mod sign;
mod store;
mod verify;
mod verify_repro;

pub use attest::AttestArgs;
pub use build::BuildArgs;
pub use fetch::FetchArgs;
pub use key::{ExportFormat, KeyArgs, KeyCommand, KeyDirArgs, SigningKeyArgs};
pub use lock::LockArgs;
pub use shell::ShellArgs;
pub use sign::SignArgs;
pub use store::{StoreArgs, StoreCommand};
pub use verify::VerifyArgs;
pub use verify_repro::VerifyReproArgs;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hb",
    version,
    about = "Hermetic builds from pinned sources, with an embedded rebuild verifier",
    after_help = "Exit codes: 0 success; 1 a check said no; 2 bad input or usage; 3 a build or the environment failed."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Store directory [default: $XDG_CACHE_HOME/hb or ~/.cache/hb]
    #[arg(long, global = true, env = "HB_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// How many builds run at once [default: number of CPUs]
    #[arg(long, short = 'j', global = true, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print a machine-readable JSON document on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// More output (-v: per-node details)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and warnings
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour in terminal output (NO_COLOR is respected with `auto`)
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a set (or one recipe and its dependencies) and write dist/ artifacts
    Build(BuildArgs),
    /// Download every source and environment package of a set into the store
    Fetch(FetchArgs),
    /// Resolve the set's Debian environment into exact .deb files (set.lock)
    Lock(LockArgs),
    /// Open an interactive shell inside a recipe's build sandbox
    Shell(ShellArgs),
    /// Rebuild everything twice or more under varied conditions, compare, explain; the gate
    /// before signing (exit 0 reproduced, 1 differs, 3 a build failed)
    VerifyRepro(VerifyReproArgs),
    /// Inspect and maintain the store
    Store(StoreArgs),
    /// Make, list and export signing keys (OpenPGP + ECDSA P-256)
    Key(KeyArgs),
    /// Sign files: SHA256SUMS(.asc), OpenPGP (.asc) and cosign-format (.sig) signatures
    Sign(SignArgs),
    /// Write SLSA provenance (DSSE-signed) and SPDX + CycloneDX SBOMs for built artifacts
    Attest(AttestArgs),
    /// Verify checksums, signatures and provenance against a trust store
    Verify(VerifyArgs),
}
