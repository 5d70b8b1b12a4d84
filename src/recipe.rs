//! Recipe sets: parsing and validating `set.toml` and one TOML file per package into typed
//! values, with diagnostics that point at the file, line, column and field.
//!
//! This module reads the recipe files and nothing else: no fetching, no hashing of sources,
//! no building. Validation that needs the whole set (unknown dependencies, duplicate names)
//! happens here too; dependency cycles are found by [`crate::plan`].

use crate::types::{Arch, PackageName, Sha256};
use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A recipe error located in a file: the file, line and column, what was expected, a hint.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("here")]
    span: SourceSpan,
    #[help]
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RecipeError {
    #[error("{path}: no such recipe set or recipe file")]
    #[diagnostic(help("pass a set directory (containing set.toml) or one package's .toml file"))]
    NotFound { path: PathBuf },
    #[error("could not read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<Located>),
}

impl RecipeError {
    fn at(file: &SourceFile, span: Range<usize>, message: impl Into<String>, hint: Option<String>) -> Self {
        let (line, column) = line_column(&file.text, span.start);
        RecipeError::Invalid(Box::new(Located {
            file: file.display.clone(),
            line,
            column,
            message: message.into(),
            source_code: NamedSource::new(file.display.clone(), file.text.clone()),
            span: span.into(),
            hint,
        }))
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

struct SourceFile {
    display: String,
    text: String,
}

impl SourceFile {
    fn read(path: &Path) -> Result<Self, RecipeError> {
        let text = fs_err::read_to_string(path).map_err(|source| RecipeError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(SourceFile {
            display: path.display().to_string(),
            text,
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, RecipeError> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim_end_matches('.').to_string();
            let hint = if message.contains("unknown field") {
                Some("remove the field or fix its spelling; see the recipe reference in README.md".into())
            } else if message.contains("missing field") {
                Some("add the field; see the recipe reference in README.md".into())
            } else {
                Some("this file must be valid TOML (https://toml.io)".into())
            };
            RecipeError::at(self, span, message, hint)
        })
    }
}

// ---------------------------------------------------------------------------------------
// Raw file shapes (what serde sees). Unknown fields are errors everywhere.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetFile {
    set: RawSet,
    environment: Option<Spanned<RawEnvironment>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    name: Spanned<String>,
    targets: Option<Vec<Spanned<String>>>,
    source_date_epoch: u64,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    kind: Spanned<String>,
    suite: Option<Spanned<String>>,
    packages: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    cross_packages: Vec<Spanned<String>>,
    #[serde(default)]
    links: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackageFile {
    package: RawPackage,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
    build: RawBuild,
    test: Option<RawTest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Spanned<String>,
    version: Spanned<String>,
    license: Spanned<String>,
    homepage: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    urls: Option<Vec<Spanned<String>>>,
    sha256: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    dest: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    #[serde(default)]
    depends: Vec<Spanned<String>>,
    script: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    script: String,
}

// ---------------------------------------------------------------------------------------
// Typed values.

/// Which build environment a set uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Environment {
    /// The machine's own /usr, read-only. Impure: recorded as such everywhere.
    Host,
    /// A root file system assembled from Debian packages pinned in `set.lock`.
    Debian(DebianEnvironment),
}

/// `kind = "debian"`: what `hb lock` resolves into exact `.deb` files per target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianEnvironment {
    /// Debian suite, e.g. "bookworm".
    pub suite: String,
    /// Packages every target gets (with their dependencies and every Essential package).
    pub packages: Vec<String>,
    /// Fix-ups made after extraction, since maintainer scripts never run: absolute link
    /// path -> link target (e.g. "/usr/bin/cc" -> "gcc").
    pub links: BTreeMap<String, String>,
    /// Extra packages of the host architecture's environment for `--cross` builds of the
    /// other targets (e.g. "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"); locked into
    /// `set.cross.lock`. Empty: no cross builds.
    pub cross_packages: Vec<String>,
}

impl DebianEnvironment {
    /// The environment `--cross` builds run in: the same packages plus the cross toolchains.
    pub fn cross(&self) -> DebianEnvironment {
        let mut cross = self.clone();
        cross.packages.extend(self.cross_packages.iter().cloned());
        cross.cross_packages.clear();
        cross
    }
}

/// A recipe set: `set.toml` plus its packages.
#[derive(Debug, Clone)]
pub struct Set {
    pub name: String,
    pub dir: PathBuf,
    pub description: Option<String>,
    /// MUST be non-empty, without duplicates.
    pub targets: Vec<Arch>,
    pub source_date_epoch: u64,
    pub environment: Environment,
    /// Keyed by package name.
    pub packages: BTreeMap<PackageName, Package>,
}

#[derive(Debug, Clone)]
pub struct Package {
    pub name: PackageName,
    pub version: String,
    pub license: String,
    pub homepage: Option<String>,
    pub description: Option<String>,
    pub sources: Vec<Source>,
    /// Names of packages of the same set; MUST all exist in the set (checked at load).
    pub depends: Vec<PackageName>,
    pub build_script: String,
    pub test_script: Option<String>,
    /// The recipe file and the sha256 of its bytes (an input of the build).
    pub file: PathBuf,
    pub recipe_digest: Sha256,
    /// 1-based line of each dependency entry, for error messages naming a cycle.
    pub depends_lines: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Downloaded from the first URL that works; pinned by sha256.
    Remote { urls: Vec<String>, sha256: Sha256 },
    /// A directory next to the recipe, hashed as a canonical tree when planned.
    LocalDir { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// Relative directory under `/build/src` where it is unpacked (`""` = the top).
    pub dest: String,
}

impl Source {
    /// A short name for messages: the file name of the first URL, or the directory.
    pub fn display_name(&self) -> String {
        match &self.kind {
            SourceKind::Remote { urls, .. } => urls
                .first()
                .and_then(|u| u.rsplit('/').next())
                .unwrap_or("source")
                .to_string(),
            SourceKind::LocalDir { path } => path.display().to_string(),
        }
    }
}

/// What `hb build <ARG>` was pointed at: a whole set, or one package of it.
pub struct Selection {
    pub set: Set,
    /// `None` = every package of the set.
    pub package: Option<PackageName>,
}

/// Load a set directory, or a single package file (its directory is the set).
pub fn load(path: &Path) -> Result<Selection, RecipeError> {
    if path.is_dir() {
        return Ok(Selection {
            set: load_set(path)?,
            package: None,
        });
    }
    if path.is_file() {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let set = load_set(dir)?;
        let canonical = fs_err::canonicalize(path).map_err(|e| RecipeError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let package = set
            .packages
            .values()
            .find(|p| fs_err::canonicalize(&p.file).ok().as_deref() == Some(canonical.as_path()))
            .map(|p| p.name.clone());
        if package.is_none() {
            return Err(RecipeError::NotFound { path: path.to_owned() });
        }
        return Ok(Selection { set, package });
    }
    Err(RecipeError::NotFound { path: path.to_owned() })
}

/// Load and validate every file of a set directory.
pub fn load_set(dir: &Path) -> Result<Set, RecipeError> {
    let set_path = dir.join("set.toml");
    if !set_path.is_file() {
        return Err(RecipeError::NotFound { path: set_path });
    }
    let set_file = SourceFile::read(&set_path)?;
    let raw: RawSetFile = set_file.parse()?;
    let name = raw.set.name.get_ref().clone();
    if PackageName::new(&name).is_err() {
        return Err(RecipeError::at(
            &set_file,
            raw.set.name.span(),
            format!("set.name: invalid name {name:?}"),
            Some("use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit".into()),
        ));
    }
    let mut targets = Vec::new();
    for t in raw
        .set
        .targets
        .unwrap_or_else(|| vec![Spanned::new(0..0, "amd64".to_string())])
    {
        let arch = Arch::parse(t.get_ref()).ok_or_else(|| {
            RecipeError::at(
                &set_file,
                t.span(),
                format!("set.targets: unknown architecture {:?}", t.get_ref()),
                Some("expected \"amd64\" or \"arm64\"".into()),
            )
        })?;
        if targets.contains(&arch) {
            return Err(RecipeError::at(
                &set_file,
                t.span(),
                format!("set.targets: {arch} is listed twice"),
                None,
            ));
        }
        targets.push(arch);
    }
    if targets.is_empty() {
        return Err(RecipeError::at(
            &set_file,
            0..0,
            "set.targets: empty list",
            Some("list at least one of \"amd64\", \"arm64\"".into()),
        ));
    }
    let environment = match raw.environment {
        None => Environment::Host,
        Some(env) => parse_environment(&set_file, env.get_ref(), env.span())?,
    };

    let mut entries: Vec<PathBuf> = fs_err::read_dir(dir)
        .map_err(|e| RecipeError::Io {
            path: dir.to_owned(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.file_name().is_some_and(|n| n != "set.toml"))
        .collect();
    entries.sort();

    let mut packages: BTreeMap<PackageName, Package> = BTreeMap::new();
    let mut name_spans: BTreeMap<PackageName, (SourceFile, DepSpans)> = BTreeMap::new();
    for file_path in entries {
        let file = SourceFile::read(&file_path)?;
        let (package, dep_spans) = parse_package(&file, &file_path)?;
        if let Some(first) = packages.get(&package.name) {
            let raw: RawPackageFile = file.parse()?;
            return Err(RecipeError::at(
                &file,
                raw.package.name.span(),
                format!("package.name: duplicate package name {:?}", package.name.as_str()),
                Some(format!(
                    "{} already defines it; package names must be unique in a set",
                    first.file.display()
                )),
            ));
        }
        name_spans.insert(package.name.clone(), (file, dep_spans));
        packages.insert(package.name.clone(), package);
    }
    for (name, (file, deps)) in &name_spans {
        for (dep, span) in deps {
            if !packages.keys().any(|k| k.as_str() == dep) {
                let known: Vec<&str> = packages
                    .keys()
                    .map(|k| k.as_str())
                    .filter(|k| *k != name.as_str())
                    .collect();
                return Err(RecipeError::at(
                    file,
                    span.clone(),
                    format!("build.depends: unknown dependency {dep:?}"),
                    Some(format!(
                        "packages of this set: {}",
                        if known.is_empty() {
                            "(none)".to_string()
                        } else {
                            known.join(", ")
                        }
                    )),
                ));
            }
        }
    }
    Ok(Set {
        name,
        dir: dir.to_owned(),
        description: raw.set.description,
        targets,
        source_date_epoch: raw.set.source_date_epoch,
        environment,
        packages,
    })
}

fn parse_environment(file: &SourceFile, env: &RawEnvironment, span: Range<usize>) -> Result<Environment, RecipeError> {
    let kind = &env.kind;
    match kind.get_ref().as_str() {
        "host" => {
            if let Some(extra) = env
                .suite
                .as_ref()
                .map(|s| s.span())
                .or(env.packages.as_ref().map(|_| span.clone()))
            {
                return Err(RecipeError::at(
                    file,
                    extra,
                    "environment: `suite` and `packages` only apply to kind = \"debian\"",
                    None,
                ));
            }
            Ok(Environment::Host)
        }
        "debian" => {
            let suite = env.suite.as_ref().ok_or_else(|| {
                RecipeError::at(
                    file,
                    span.clone(),
                    "environment: missing field `suite` (the Debian suite, e.g. \"bookworm\")",
                    None,
                )
            })?;
            let valid_word =
                |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-+.:_".contains(c));
            if !valid_word(suite.get_ref()) {
                return Err(RecipeError::at(
                    file,
                    suite.span(),
                    format!("environment.suite: invalid suite {:?}", suite.get_ref()),
                    None,
                ));
            }
            let packages = env.packages.as_ref().ok_or_else(|| {
                RecipeError::at(
                    file,
                    span.clone(),
                    "environment: missing field `packages` (Debian packages the builds need)",
                    Some("for example packages = [\"build-essential\"]".into()),
                )
            })?;
            for p in packages.iter().chain(&env.cross_packages) {
                if !valid_word(p.get_ref()) {
                    return Err(RecipeError::at(
                        file,
                        p.span(),
                        format!("environment.packages: invalid package name {:?}", p.get_ref()),
                        None,
                    ));
                }
            }
            let mut links = BTreeMap::new();
            for (link, target) in &env.links {
                let ok = link.starts_with('/') && !link.split('/').any(|c| c == "..") && !target.get_ref().is_empty();
                if !ok {
                    return Err(RecipeError::at(
                        file,
                        target.span(),
                        format!("environment.links: {link:?} must be an absolute path without '..' and its target non-empty"),
                        None,
                    ));
                }
                links.insert(link.clone(), target.get_ref().clone());
            }
            Ok(Environment::Debian(DebianEnvironment {
                suite: suite.get_ref().clone(),
                packages: packages.iter().map(|p| p.get_ref().clone()).collect(),
                links,
                cross_packages: env.cross_packages.iter().map(|p| p.get_ref().clone()).collect(),
            }))
        }
        other => Err(RecipeError::at(
            file,
            kind.span(),
            format!("environment.kind: unknown environment kind {other:?}"),
            Some("expected \"debian\" (pinned by `hb lock`) or \"host\" (the machine's own /usr, impure)".into()),
        )),
    }
}

type DepSpans = Vec<(String, Range<usize>)>;

fn parse_package(file: &SourceFile, path: &Path) -> Result<(Package, DepSpans), RecipeError> {
    let raw: RawPackageFile = file.parse()?;
    let name = PackageName::new(raw.package.name.get_ref()).map_err(|why| {
        RecipeError::at(
            file,
            raw.package.name.span(),
            format!("package.name: {why}"),
            Some("use lowercase letters, digits, '-', '_', '+' and '.', starting with a letter or digit".into()),
        )
    })?;
    for (field, value) in [("version", &raw.package.version), ("license", &raw.package.license)] {
        if value.get_ref().trim().is_empty() {
            return Err(RecipeError::at(
                file,
                value.span(),
                format!("package.{field}: must not be empty"),
                None,
            ));
        }
    }
    let recipe_dir = path.parent().unwrap_or(Path::new("."));
    let mut sources = Vec::new();
    for (index, spanned) in raw.source.iter().enumerate() {
        sources.push(parse_source(file, recipe_dir, index, spanned)?);
    }
    let mut depends = Vec::new();
    let mut dep_spans = Vec::new();
    let mut depends_lines = Vec::new();
    for dep in &raw.build.depends {
        let dep_name = PackageName::new(dep.get_ref())
            .map_err(|why| RecipeError::at(file, dep.span(), format!("build.depends: {why}"), None))?;
        if dep_name == name {
            return Err(RecipeError::at(
                file,
                dep.span(),
                format!("build.depends: {name} depends on itself"),
                Some("remove it from depends".into()),
            ));
        }
        depends_lines.push(line_column(&file.text, dep.span().start).0);
        dep_spans.push((dep.get_ref().clone(), dep.span()));
        depends.push(dep_name);
    }
    if raw.build.script.get_ref().trim().is_empty() {
        return Err(RecipeError::at(
            file,
            raw.build.script.span(),
            "build.script: must not be empty",
            None,
        ));
    }
    let package = Package {
        name,
        version: raw.package.version.into_inner(),
        license: raw.package.license.into_inner(),
        homepage: raw.package.homepage,
        description: raw.package.description,
        sources,
        depends,
        build_script: raw.build.script.into_inner(),
        test_script: raw.test.map(|t| t.script),
        file: path.to_owned(),
        recipe_digest: Sha256::of_bytes(file.text.as_bytes()),
        depends_lines,
    };
    Ok((package, dep_spans))
}

fn parse_source(
    file: &SourceFile,
    recipe_dir: &Path,
    index: usize,
    spanned: &Spanned<RawSource>,
) -> Result<Source, RecipeError> {
    let raw = spanned.get_ref();
    let which = format!("source #{}", index + 1);
    let dest = match &raw.dest {
        None => String::new(),
        Some(d) => {
            let value = d.get_ref();
            let ok = !value.starts_with('/') && value.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
            if !ok {
                return Err(RecipeError::at(
                    file,
                    d.span(),
                    format!("{which}: dest {value:?} must be a relative path without '.' or '..'"),
                    None,
                ));
            }
            value.clone()
        }
    };
    let kind = match (&raw.urls, &raw.path) {
        (Some(_), Some(p)) => {
            return Err(RecipeError::at(
                file,
                p.span(),
                format!("{which}: give either `urls` or `path`, not both"),
                None,
            ))
        }
        (None, None) => {
            return Err(RecipeError::at(
                file,
                spanned.span(),
                format!("{which}: expected `urls` (with `sha256`) or `path` (a local directory)"),
                None,
            ))
        }
        (None, Some(p)) => {
            let rel = p.get_ref();
            let full = recipe_dir.join(rel);
            if !full.is_dir() {
                return Err(RecipeError::at(
                    file,
                    p.span(),
                    format!("{which}: path {rel:?} is not a directory next to the recipe"),
                    Some(format!("looked for {}", full.display())),
                ));
            }
            if raw.sha256.is_some() {
                return Err(RecipeError::at(
                    file,
                    raw.sha256.as_ref().map(|s| s.span()).unwrap_or(p.span()),
                    format!("{which}: `sha256` is not used with `path` (local directories are hashed as a tree)"),
                    None,
                ));
            }
            SourceKind::LocalDir { path: full }
        }
        (Some(urls), None) => {
            if urls.is_empty() {
                return Err(RecipeError::at(
                    file,
                    spanned.span(),
                    format!("{which}: `urls` is empty"),
                    None,
                ));
            }
            for url in urls {
                check_url(file, &which, url)?;
            }
            let sha = raw.sha256.as_ref().ok_or_else(|| {
                RecipeError::at(
                    file,
                    spanned.span(),
                    format!("{which}: missing field `sha256` (every downloaded source is pinned by its sha256)"),
                    Some("add sha256 = \"<64 hex digits>\"; `sha256sum FILE` prints it".into()),
                )
            })?;
            let sha256 = Sha256::parse(sha.get_ref())
                .map_err(|why| RecipeError::at(file, sha.span(), format!("{which}: sha256: {why}"), None))?;
            SourceKind::Remote {
                urls: urls.iter().map(|u| u.get_ref().clone()).collect(),
                sha256,
            }
        }
    };
    Ok(Source { kind, dest })
}

fn check_url(file: &SourceFile, which: &str, url: &Spanned<String>) -> Result<(), RecipeError> {
    let value = url.get_ref();
    let ok = ["https://", "http://", "file://", "mirror://"]
        .iter()
        .any(|scheme| value.starts_with(scheme) && value.len() > scheme.len());
    if !ok {
        return Err(RecipeError::at(
            file,
            url.span(),
            format!("{which}: unsupported URL {value:?}"),
            Some("expected https://, http://, file:///absolute/path or mirror://debian/pool/...".into()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
