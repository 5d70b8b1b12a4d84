use super::key::SigningKeyArgs;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct AttestArgs {
    /// The set directory the artifacts were built from
    #[arg(value_name = "SET")]
    pub set: PathBuf,
    /// Directory with the artifacts and build-report.json
    #[arg(long, default_value = "dist", value_name = "DIR")]
    pub dist: PathBuf,
    /// Directory for the provenance and the SBOMs [default: the dist directory]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningKeyArgs,
    /// The reproducibility report that must cover every artifact [default: DIST/repro/report.json]
    #[arg(long, value_name = "FILE")]
    pub repro_report: Option<PathBuf>,
    /// Attest artifacts no passing reproducibility report covers (recorded in the provenance)
    #[arg(long)]
    pub no_repro_gate: bool,
    /// The builder id recorded in the provenance (runDetails.builder.id)
    #[arg(long, value_name = "URI", default_value = crate::sign::provenance::DEFAULT_BUILDER_ID)]
    pub builder_id: String,
}
