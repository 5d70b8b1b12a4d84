//! hb: hermetic builds from pinned sources, with an embedded rebuild verifier.
//!
//! The flow: [`recipe`] parses a set, [`plan`] orders and hashes it (pure), [`fetch`]
//! brings sources into the [`store`], [`executor`] runs [`build`] for each node inside the
//! sandbox (`hb-sandbox` crate) on an [`env`] root file system, and [`dist`] packs the
//! artifacts with [`archive`]. [`commands`] glue these together per CLI command.

// Errors are the cold path and carry what a person needs (paths, URLs, log tails); boxing
// them everywhere would only add noise.
#![allow(clippy::result_large_err)]

pub mod archive;
pub mod build;
pub mod cli;
pub mod commands;
pub mod deb;
pub mod dist;
pub mod env;
pub mod env_vars;
pub mod error;
pub mod executor;
pub mod fetch;
pub mod lock;
pub mod plan;
pub mod recipe;
pub mod repro;
pub mod rootfs;
pub mod sign;
pub mod store;
pub mod types;
pub mod ui;
pub mod variation;

pub use commands::run;
pub use error::Error;
