#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Re-hash every source and output; exit 1 if anything is corrupt
    Verify,
    /// Remove temporary files, failed-build logs, and everything no gc root references
    Gc {
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the store's location
    Path,
}
