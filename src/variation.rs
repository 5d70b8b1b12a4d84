//! Build conditions and their variations: what `hb verify-repro` changes between rounds.
//!
//! [`Conditions`] is everything about a build that the inputs do not pin but the sandbox
//! sets: canonical values for normal builds, varied ones for reproducibility checks. Pure
//! data: [`crate::build`] turns it into a sandbox policy, this module does no IO.
//!
//! The variations (each documented on [`Variation`]):
//! `build-path`, `clock`, `tz`, `locale`, `umask`, `jobs`, `hostname`, `user`, `home`,
//! `environment`, `dir-order`, `aslr`, `uname`.

use serde::Serialize;
use std::fmt;

/// One thing a reproducibility round may vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variation {
    /// The build directory inside the sandbox: `/build` becomes `/hb-varied/build-path`
    /// (CFLAGS' `-ffile-prefix-map` follows it, as a well-behaved build would).
    BuildPath,
    /// Wall clock: three years ahead, through libfaketime when the environment has it
    /// (`LD_PRELOAD`); otherwise the variation is reported as unavailable.
    Clock,
    /// `TZ=UTC` becomes a POSIX zone twelve hours east (`NZST-12NZDT`).
    Tz,
    /// `LC_ALL=C.UTF-8` becomes `LC_ALL=C` with `LANGUAGE=fr`.
    Locale,
    /// umask 022 becomes 002.
    Umask,
    /// `HB_JOBS` becomes 1 and the build sees one CPU (affinity) instead of all.
    Jobs,
    /// Host name `hb-build` becomes `hb-varied-host`.
    Hostname,
    /// uid/gid 1000 `hb` becomes 1234 `builder`.
    User,
    /// `HOME=/homeless-shelter` becomes `/nonexistent/home`.
    Home,
    /// The build environment in reverse order, with an extra variable `HB_REPRO_EXTRA=1`.
    Environment,
    /// Sources placed on a tmpfs with entries created in reverse order, so `readdir`
    /// returns them in another order.
    DirOrder,
    /// Address-space randomization turned off (`ADDR_NO_RANDOMIZE`), instead of on.
    Aslr,
    /// `uname` reports a 2.6 kernel (`UNAME26` personality).
    Uname,
}

impl Variation {
    pub const ALL: [Variation; 13] = [
        Variation::BuildPath,
        Variation::Clock,
        Variation::Tz,
        Variation::Locale,
        Variation::Umask,
        Variation::Jobs,
        Variation::Hostname,
        Variation::User,
        Variation::Home,
        Variation::Environment,
        Variation::DirOrder,
        Variation::Aslr,
        Variation::Uname,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variation::BuildPath => "build-path",
            Variation::Clock => "clock",
            Variation::Tz => "tz",
            Variation::Locale => "locale",
            Variation::Umask => "umask",
            Variation::Jobs => "jobs",
            Variation::Hostname => "hostname",
            Variation::User => "user",
            Variation::Home => "home",
            Variation::Environment => "environment",
            Variation::DirOrder => "dir-order",
            Variation::Aslr => "aslr",
            Variation::Uname => "uname",
        }
    }

    pub fn parse(text: &str) -> Option<Variation> {
        Variation::ALL.into_iter().find(|v| v.name() == text)
    }

    /// The usual fix when this variation changes a build's output.
    pub fn hint(self) -> &'static str {
        match self {
            Variation::BuildPath => "the build path leaks into the output: pass -ffile-prefix-map=$PWD=. (CFLAGS has it for /build), avoid __FILE__ and absolute paths in generated files",
            Variation::Clock => "the build embeds the current time: honour SOURCE_DATE_EPOCH (date -d @$SOURCE_DATE_EPOCH), gzip -n, tar --mtime",
            Variation::Tz => "the output depends on the time zone: format dates in UTC (date -u, TZ=UTC)",
            Variation::Locale => "the output depends on the locale: force LC_ALL=C for sort, date and messages",
            Variation::Umask => "file modes depend on the umask: set modes explicitly (install -m, chmod)",
            Variation::Jobs => "the output depends on parallelism: fix missing make dependencies, or build with -j1",
            Variation::Hostname => "the build embeds the host name: remove it (or use a fixed value)",
            Variation::User => "the build embeds the user name or id: remove it (or use a fixed value)",
            Variation::Home => "the build reads or embeds $HOME: do not depend on it",
            Variation::Environment => "the build embeds its environment: record only the variables that matter",
            Variation::DirOrder => "the output depends on directory order: sort file lists (LC_ALL=C sort, $(sort $(wildcard ...)))",
            Variation::Aslr => "the output depends on memory addresses: do not hash or print pointers",
            Variation::Uname => "the build embeds the kernel version: do not record uname",
        }
    }
}

impl fmt::Display for Variation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parse `--vary`: a comma-separated list, `all` or `none`.
pub fn parse_list(text: &str) -> Result<Vec<Variation>, String> {
    match text {
        "all" => return Ok(Variation::ALL.to_vec()),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim) {
        let v = Variation::parse(word).ok_or_else(|| {
            format!(
                "unknown variation {word:?} (expected all, none, or some of: {})",
                Variation::ALL.map(|v| v.name()).join(", ")
            )
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

/// The conditions of one build: what the sandbox sets that the inputs do not pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conditions {
    /// Where the build directory is inside the sandbox; sources are at `<build_path>/src`.
    pub build_path: String,
    /// `FAKETIME` value for libfaketime, when the clock is varied.
    pub faketime: Option<String>,
    pub tz: String,
    pub lc_all: String,
    pub language: Option<String>,
    pub umask: u32,
    /// `HB_JOBS`; with `limit_cpus`, also the number of CPUs the build may run on.
    pub jobs: usize,
    pub limit_cpus: bool,
    pub hostname: String,
    pub uid: u32,
    pub user: String,
    pub home: String,
    pub extra_env: Option<(String, String)>,
    /// `environ` in reverse name order instead of sorted.
    pub env_order_reversed: bool,
    pub dir_order_reversed: bool,
    pub no_aslr: bool,
    pub uname26: bool,
}

impl Conditions {
    /// The conditions of every normal build.
    pub fn canonical(jobs: usize) -> Conditions {
        Conditions {
            build_path: "/build".into(),
            faketime: None,
            tz: "UTC".into(),
            lc_all: "C.UTF-8".into(),
            language: None,
            umask: 0o022,
            jobs,
            limit_cpus: false,
            hostname: "hb-build".into(),
            uid: 1000,
            user: "hb".into(),
            home: "/homeless-shelter".into(),
            extra_env: None,
            env_order_reversed: false,
            dir_order_reversed: false,
            no_aslr: false,
            uname26: false,
        }
    }

    /// These conditions with `variations` applied.
    pub fn varied(&self, variations: &[Variation]) -> Conditions {
        let mut c = self.clone();
        for v in variations {
            match v {
                Variation::BuildPath => c.build_path = "/hb-varied/build-path".into(),
                Variation::Clock => c.faketime = Some("+1096d".into()),
                Variation::Tz => c.tz = "NZST-12NZDT".into(),
                Variation::Locale => {
                    c.lc_all = "C".into();
                    c.language = Some("fr".into());
                }
                Variation::Umask => c.umask = 0o002,
                Variation::Jobs => {
                    c.jobs = 1;
                    c.limit_cpus = true;
                }
                Variation::Hostname => c.hostname = "hb-varied-host".into(),
                Variation::User => {
                    c.uid = 1234;
                    c.user = "builder".into();
                }
                Variation::Home => c.home = "/nonexistent/home".into(),
                Variation::Environment => {
                    c.extra_env = Some(("HB_REPRO_EXTRA".into(), "1".into()));
                    c.env_order_reversed = true;
                }
                Variation::DirOrder => c.dir_order_reversed = true,
                Variation::Aslr => c.no_aslr = true,
                Variation::Uname => c.uname26 = true,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variation_changes_the_conditions() {
        let canonical = Conditions::canonical(2);
        for v in Variation::ALL {
            assert_ne!(canonical.varied(&[v]), canonical, "{v} changes nothing");
            assert_eq!(Variation::parse(v.name()), Some(v));
        }
    }

    #[test]
    fn lists_parse() {
        assert_eq!(parse_list("all").unwrap().len(), Variation::ALL.len());
        assert!(parse_list("none").unwrap().is_empty());
        assert_eq!(parse_list("tz,umask,tz").unwrap(), [Variation::Tz, Variation::Umask]);
        assert!(parse_list("tz,bogus").unwrap_err().contains("bogus"));
    }
}
