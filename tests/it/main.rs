//! hb's integration tests: one binary, one file per area, a shared context (`common`).

mod build;
mod common;
mod env;
mod errors;
mod repro;
mod sandbox;
mod shell;
mod sign;
mod store;
mod toolchain;
