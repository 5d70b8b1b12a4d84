use super::key::SigningKeyArgs;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The files to sign (artifacts covered by a passing `hb verify-repro` report)
    #[arg(required = true, value_name = "FILES")]
    pub files: Vec<PathBuf>,
    /// Directory for SHA256SUMS, SHA256SUMS.asc and the signatures [default: the files' directory]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
    /// The reproducibility report that must cover every file
    #[arg(long, value_name = "FILE", default_value = crate::sign::DEFAULT_REPRO_REPORT)]
    pub repro_report: PathBuf,
    /// Sign files no passing reproducibility report covers (recorded in the provenance)
    #[arg(long)]
    pub no_repro_gate: bool,
}
