use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// A set directory (with set.toml) or one recipe file of a set
    #[arg(value_name = "SET|RECIPE")]
    pub target: PathBuf,
    /// Architectures to build, comma-separated [default: the set's targets]
    #[arg(long, value_delimiter = ',', value_name = "ARCH,..")]
    pub arch: Vec<String>,
    /// Directory for the artifacts and the build report
    #[arg(long, default_value = "dist", value_name = "DIR")]
    pub out: PathBuf,
    /// Use only sources already in the store
    #[arg(long)]
    pub offline: bool,
    /// Build foreign architectures with Debian's cross toolchains in the host's environment
    /// (set.cross.lock) instead of natively under emulation; a separate digest domain
    #[arg(long)]
    pub cross: bool,
    /// Keep the work directory of a failed build and print its path
    #[arg(long)]
    pub keep_failed: bool,
}
