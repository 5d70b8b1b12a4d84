//! The top-level error of a command, and the one place that maps errors to exit codes:
//! 0 success; 1 a check said no; 2 bad input or usage; 3 a build or the environment failed.

use crate::build::BuildError;
use crate::dist::DistError;
use crate::env::EnvError;
use crate::fetch::FetchError;
use crate::plan::PlanError;
use crate::recipe::RecipeError;
use crate::sign::SignError;
use crate::store::StoreError;

pub const EXIT_CHECK_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_BUILD_FAILED: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error(transparent)]
    Sign(#[from] SignError),
    /// A usage mistake that clap cannot see (e.g. an unknown --arch value).
    #[error("{message}")]
    Usage { message: String, hint: Option<String> },
    #[error("could not find the hb executable to start the sandbox")]
    CurrentExe(#[source] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Recipe(_) | Error::Plan(_) | Error::Usage { .. } => EXIT_BAD_INPUT,
            Error::Sign(e) => match e.kind() {
                crate::sign::ErrorKind::CheckFailed => EXIT_CHECK_FAILED,
                crate::sign::ErrorKind::BadInput => EXIT_BAD_INPUT,
                crate::sign::ErrorKind::Environment => EXIT_BUILD_FAILED,
            },
            Error::Env(e) if e.is_bad_input() => EXIT_BAD_INPUT,
            Error::Env(_) => EXIT_BUILD_FAILED,
            Error::Fetch(FetchError::Store(_)) => EXIT_BUILD_FAILED,
            Error::Fetch(_) => EXIT_BAD_INPUT,
            Error::Build(BuildError::Unpack { .. }) => EXIT_BAD_INPUT,
            Error::Build(_) | Error::Store(_) | Error::Dist(_) | Error::CurrentExe(_) => EXIT_BUILD_FAILED,
        }
    }

    /// `hint:` lines printed after the error chain.
    pub fn hints(&self) -> Vec<String> {
        let hint = match self {
            Error::Fetch(e) => e.hint(),
            Error::Env(e) => e.hint(),
            Error::Usage { hint, .. } => hint.clone(),
            Error::Sign(e) => e.hint(),
            Error::Plan(PlanError::Cycle { locations, .. }) => Some(format!(
                "remove one of these dependencies to break the cycle: {}",
                locations.join(", ")
            )),
            Error::Build(BuildError::Sandbox { source, arch, .. }) => Some(match source {
                hb_sandbox::Error::Unsupported { feature } if feature == hb_sandbox::BINFMT_UNSUPPORTED => format!(
                    "this kernel cannot emulate {arch} inside the sandbox; build {arch} with `--cross` (Debian's cross toolchain), or on an {arch} machine, or use Linux >= 6.7"
                ),
                hb_sandbox::Error::Unsupported { .. } => {
                    "hb refuses to build without its sandbox; use a kernel with unprivileged user namespaces and Landlock ABI >= 4".to_string()
                }
                _ => "run with -v for details, or `hb shell RECIPE` to reproduce it interactively".to_string(),
            }),
            Error::Build(BuildError::Failed { .. }) => {
                Some("`hb shell RECIPE` opens the same sandbox interactively; --keep-failed keeps the work directory".into())
            }
            Error::Build(BuildError::Unpack { .. }) => {
                Some("the source archive is unsafe or damaged; hb refuses to unpack it".into())
            }
            _ => None,
        };
        hint.into_iter().collect()
    }

    /// The recipe diagnostic, for a rendering with the source snippet.
    pub fn as_diagnostic(&self) -> Option<&dyn miette::Diagnostic> {
        match self {
            Error::Recipe(e) => Some(e),
            Error::Env(crate::env::EnvError::Lock(e @ crate::lock::LockError::Invalid(_))) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Arch;

    fn sandbox_error(feature: &str) -> Error {
        Error::Build(BuildError::Sandbox {
            package: "lua".into(),
            arch: Arch::Arm64,
            source: hb_sandbox::Error::Unsupported {
                feature: feature.into(),
            },
        })
    }

    #[test]
    fn a_kernel_without_private_binfmt_misc_is_told_to_use_cross() {
        let hints = sandbox_error(hb_sandbox::BINFMT_UNSUPPORTED).hints();
        assert_eq!(hints.len(), 1);
        assert!(hints[0].contains("--cross") && hints[0].contains("arm64"), "{hints:?}");
        // Other missing features keep their own hint.
        let hints = sandbox_error("Landlock ABI >= 4").hints();
        assert!(!hints[0].contains("--cross"), "{hints:?}");
    }
}
