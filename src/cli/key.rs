use std::path::PathBuf;

/// Where keys live, for every `hb key` subcommand and for `hb sign` / `hb attest`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyDirArgs {
    /// Key directory [default: $XDG_CONFIG_HOME/hb/keys or ~/.config/hb/keys]
    #[arg(long, env = "HB_KEYS", value_name = "DIR")]
    pub keys: Option<PathBuf>,
}

/// Which key signs, and where its passphrase comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct SigningKeyArgs {
    #[command(flatten)]
    pub keys: KeyDirArgs,
    /// The key to use: a fingerprint prefix (8+ hex digits) or part of its name [default: the only key]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Read the passphrase from this file's first line [default: the HB_KEY_PASSPHRASE variable]
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a signing key pair: OpenPGP (v4, Ed25519) and ECDSA P-256 (cosign format),
    /// private halves encrypted with the passphrase
    Generate {
        /// The OpenPGP user ID, e.g. "Release Team <release@example.org>"
        #[arg(long, value_name = "NAME")]
        name: String,
        #[command(flatten)]
        keys: KeyDirArgs,
        /// Read the passphrase from this file's first line [default: the HB_KEY_PASSPHRASE variable]
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List the keys of the key directory
    List {
        #[command(flatten)]
        keys: KeyDirArgs,
    },
    /// Print or write the public keys (armored OpenPGP certificate and PEM)
    Export {
        #[command(flatten)]
        keys: KeyDirArgs,
        /// The key: a fingerprint prefix (8+ hex digits) or part of its name [default: the only key]
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Write <label>.asc and <label>.pem into DIR (e.g. a trust store) instead of printing
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Which public key to print without --out
        #[arg(long, value_enum, default_value_t = ExportFormat::Both)]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Both,
    Openpgp,
    Pem,
}
