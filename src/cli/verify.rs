use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A signed file, or a directory of them (with SHA256SUMS and/or *.intoto.jsonl)
    #[arg(value_name = "FILE|DIR")]
    pub target: PathBuf,
    /// Directory of trusted public keys (*.asc, *.pem) [default: $XDG_CONFIG_HOME/hb/trust]
    #[arg(long, env = "HB_TRUST", value_name = "DIR")]
    pub trust: Option<PathBuf>,
}
