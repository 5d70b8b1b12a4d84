use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// The recipe file whose build sandbox to open (its dependencies are built first)
    #[arg(value_name = "RECIPE")]
    pub recipe: PathBuf,
    /// Architecture of the sandbox [default: the first of the set's targets]
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Run this command instead of an interactive shell
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}
