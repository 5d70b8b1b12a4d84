use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The set directory whose [environment] to resolve into set.lock
    #[arg(value_name = "SET")]
    pub set: PathBuf,
}
