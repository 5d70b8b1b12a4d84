//! Every environment variable hb reads or sets, named once, with what it means.

/// Store directory (overrides `$XDG_CACHE_HOME/hb`); same as `--store`.
pub const HB_STORE: &str = "HB_STORE";
/// Base URL that `mirror://debian/` expands to (overrides the apt configuration).
pub const HB_MIRROR_DEBIAN: &str = "HB_MIRROR_DEBIAN";
/// Disables colour when set to anything (https://no-color.org).
pub const NO_COLOR: &str = "NO_COLOR";
/// Default store location's parent.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";

// Set inside the build sandbox (the whole environment of a build is listed in `build.rs`).

/// Build parallelism the recipe should use (`make -j"$HB_JOBS"`).
pub const HB_JOBS: &str = "HB_JOBS";
/// Debian name of the architecture being built for (`amd64`, `arm64`).
pub const HB_TARGET_ARCH: &str = "HB_TARGET_ARCH";
/// Reproducible-builds timestamp, from the set's `source_date_epoch`.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
