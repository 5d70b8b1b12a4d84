use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// A set directory (with set.toml) or one recipe file of a set
    #[arg(value_name = "SET|RECIPE")]
    pub target: PathBuf,
}
