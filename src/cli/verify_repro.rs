use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct VerifyReproArgs {
    /// A set directory (with set.toml) or one recipe file of a set
    #[arg(value_name = "SET|RECIPE")]
    pub target: PathBuf,
    /// Architectures to verify, comma-separated [default: the set's targets]
    #[arg(long, value_delimiter = ',', value_name = "ARCH,..")]
    pub arch: Vec<String>,
    /// Builds of every node; round 1 is canonical, later rounds vary the conditions
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub rounds: usize,
    /// What later rounds vary: all, none, or a comma-separated list of
    /// build-path,clock,tz,locale,umask,jobs,hostname,user,home,environment,dir-order,aslr,uname
    #[arg(long, default_value = "all", value_name = "LIST|all|none")]
    pub vary: String,
    /// Directory for report.json, report.html and diffoscope output
    #[arg(long, default_value = "dist/repro", value_name = "DIR")]
    pub report: PathBuf,
    /// Also write JUnit XML here
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Directory for the verified artifacts (written only when everything reproduced)
    #[arg(long, default_value = "dist", value_name = "DIR")]
    pub out: PathBuf,
    /// Do not rebuild differing packages one variation at a time to explain them
    #[arg(long)]
    pub no_explain: bool,
    /// Use only sources already in the store
    #[arg(long)]
    pub offline: bool,
    /// Build foreign architectures with Debian's cross toolchains in the host's environment
    /// (set.cross.lock) instead of natively under emulation; a separate digest domain
    #[arg(long)]
    pub cross: bool,
}
