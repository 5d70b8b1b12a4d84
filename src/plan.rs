//! The build plan: a DAG of (package, arch) nodes in topological order, with input hashes.
//!
//! Pure code: no filesystem or network IO. Everything that needs IO (digests of local source
//! trees, the environment's digest) is computed by the caller and passed in [`PlanInputs`].
//!
//! Input hash = sha256 of a canonical encoding (JSON with sorted keys, no whitespace) of:
//! the build-protocol version, package name and version, the recipe file's sha256, every
//! source's sha256 and destination, the input hashes of the dependencies (by name), the
//! environment digest, the target arch, the build method, and SOURCE_DATE_EPOCH.

use crate::recipe::{Set, SourceKind};
use crate::types::{Arch, PackageName, Sha256};
use serde::Serialize;
use std::collections::BTreeMap;

/// Bumped whenever what goes into a build changes in a way the input hash does not see
/// (sandbox layout, environment variables, normalization).
pub const BUILD_PROTOCOL_VERSION: u32 = 1;

/// What the plan needs besides the set.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    /// Digest of each local-directory source, keyed by (package, source index).
    pub local_source_digests: BTreeMap<(PackageName, usize), Sha256>,
    /// Digest identifying the build environment (the lock digest, or a host marker).
    pub environment_digest: String,
    /// How the build runs: "native", "emulated", "cross", "host".
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub package: PackageName,
    pub arch: Arch,
    /// Indexes into [`Plan::nodes`] of the direct dependencies; MUST be smaller than this
    /// node's own index (topological order).
    pub deps: Vec<usize>,
    pub input_hash: Sha256,
    /// sha256 of each source, in recipe order.
    pub source_digests: Vec<Sha256>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Topologically sorted: every node comes after its dependencies.
    pub nodes: Vec<Node>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("dependency cycle: {}", .cycle.join(" -> "))]
    Cycle {
        /// The packages of the cycle, the first repeated at the end.
        cycle: Vec<String>,
        /// `file:line` of each `depends` entry that closes a link of the cycle.
        locations: Vec<String>,
    },
    #[error("package {0:?} is not in the set")]
    UnknownPackage(String),
    #[error("source {index} of {package} is a local directory whose digest was not computed")]
    MissingLocalDigest { package: String, index: usize },
}

#[derive(Serialize)]
struct CanonicalInputs<'a> {
    protocol: u32,
    package: &'a str,
    version: &'a str,
    recipe: &'a str,
    sources: Vec<(&'a str, &'a str)>,
    deps: BTreeMap<&'a str, &'a str>,
    environment: &'a str,
    arch: &'a str,
    method: &'a str,
    source_date_epoch: u64,
}

/// Plan the builds of `roots` (and their dependency closure) for each arch in `arches`.
pub fn plan(set: &Set, roots: &[PackageName], arches: &[Arch], inputs: &PlanInputs) -> Result<Plan, PlanError> {
    let order = topological_order(set, roots)?;
    let mut nodes = Vec::new();
    for &arch in arches {
        let mut index_of: BTreeMap<&PackageName, usize> = BTreeMap::new();
        for name in &order {
            let package = &set.packages[name];
            let mut source_digests = Vec::new();
            for (index, source) in package.sources.iter().enumerate() {
                let digest = match &source.kind {
                    SourceKind::Remote { sha256, .. } => sha256.clone(),
                    SourceKind::LocalDir { .. } => inputs
                        .local_source_digests
                        .get(&(name.clone(), index))
                        .cloned()
                        .ok_or_else(|| PlanError::MissingLocalDigest {
                            package: name.to_string(),
                            index,
                        })?,
                };
                source_digests.push(digest);
            }
            let deps: Vec<usize> = package.depends.iter().map(|d| index_of[d]).collect();
            let canonical = CanonicalInputs {
                protocol: BUILD_PROTOCOL_VERSION,
                package: name.as_str(),
                version: &package.version,
                recipe: package.recipe_digest.as_str(),
                sources: source_digests
                    .iter()
                    .zip(&package.sources)
                    .map(|(d, s)| (d.as_str(), s.dest.as_str()))
                    .collect(),
                deps: package
                    .depends
                    .iter()
                    .zip(&deps)
                    .map(|(d, &i)| (d.as_str(), nodes_hash(&nodes, i)))
                    .collect(),
                environment: &inputs.environment_digest,
                arch: arch.as_str(),
                method: &inputs.method,
                source_date_epoch: set.source_date_epoch,
            };
            let encoded = serde_json::to_vec(&canonical).expect("plain data always serializes");
            let input_hash = Sha256::of_bytes(&encoded);
            index_of.insert(name, nodes.len());
            nodes.push(Node {
                package: name.clone(),
                arch,
                deps,
                input_hash,
                source_digests,
            });
        }
    }
    Ok(Plan { nodes })
}

fn nodes_hash(nodes: &[Node], index: usize) -> &str {
    nodes[index].input_hash.as_str()
}

/// The closure of `roots` in dependency order (dependencies first; ties broken by name so
/// the order is stable). Errors name a cycle if there is one.
pub fn topological_order(set: &Set, roots: &[PackageName]) -> Result<Vec<PackageName>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        set: &Set,
        name: &PackageName,
        marks: &mut BTreeMap<PackageName, Mark>,
        stack: &mut Vec<PackageName>,
        out: &mut Vec<PackageName>,
    ) -> Result<(), PlanError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|n| n.to_string()).collect();
                cycle.push(name.to_string());
                let locations = stack[start..]
                    .iter()
                    .zip(stack[start + 1..].iter().chain(std::iter::once(name)))
                    .filter_map(|(from, to)| {
                        let p = &set.packages[from];
                        let i = p.depends.iter().position(|d| d == to)?;
                        Some(format!(
                            "{}:{}",
                            p.file.display(),
                            p.depends_lines.get(i).copied().unwrap_or(0)
                        ))
                    })
                    .collect();
                return Err(PlanError::Cycle { cycle, locations });
            }
            None => {}
        }
        let package = set
            .packages
            .get(name)
            .ok_or_else(|| PlanError::UnknownPackage(name.to_string()))?;
        marks.insert(name.clone(), Mark::Visiting);
        stack.push(name.clone());
        let mut deps = package.depends.clone();
        deps.sort();
        for dep in &deps {
            visit(set, dep, marks, stack, out)?;
        }
        stack.pop();
        marks.insert(name.clone(), Mark::Done);
        out.push(name.clone());
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::new();
    let mut sorted_roots = roots.to_vec();
    sorted_roots.sort();
    for root in &sorted_roots {
        visit(set, root, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Environment, Package, Source};
    use std::path::PathBuf;

    fn package(name: &str, deps: &[&str]) -> Package {
        Package {
            name: PackageName::new(name).unwrap(),
            version: "1".into(),
            license: "MIT".into(),
            homepage: None,
            description: None,
            sources: vec![Source {
                kind: SourceKind::Remote {
                    urls: vec!["https://example.org/x.tar.gz".into()],
                    sha256: Sha256::of_bytes(name.as_bytes()),
                },
                dest: String::new(),
            }],
            depends: deps.iter().map(|d| PackageName::new(d).unwrap()).collect(),
            build_script: "true".into(),
            test_script: None,
            file: PathBuf::from(format!("{name}.toml")),
            recipe_digest: Sha256::of_bytes(format!("recipe {name}").as_bytes()),
            depends_lines: deps.iter().map(|_| 7).collect(),
        }
    }

    fn set(packages: Vec<Package>) -> Set {
        Set {
            name: "t".into(),
            dir: PathBuf::from("."),
            description: None,
            targets: vec![Arch::Amd64],
            source_date_epoch: 1,
            environment: Environment::Host,
            packages: packages.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    fn inputs() -> PlanInputs {
        PlanInputs {
            local_source_digests: BTreeMap::new(),
            environment_digest: "env".into(),
            method: "host".into(),
        }
    }

    fn names(s: &Set) -> Vec<PackageName> {
        s.packages.keys().cloned().collect()
    }

    #[test]
    fn dependencies_come_first() {
        let s = set(vec![
            package("app", &["lib"]),
            package("lib", &[]),
            package("zz", &["app"]),
        ]);
        let order = topological_order(&s, &names(&s)).unwrap();
        let order: Vec<&str> = order.iter().map(|n| n.as_str()).collect();
        assert_eq!(order, ["lib", "app", "zz"]);
    }

    #[test]
    fn cycle_is_named_with_locations() {
        let s = set(vec![package("a", &["b"]), package("b", &["c"]), package("c", &["a"])]);
        let err = topological_order(&s, &names(&s)).unwrap_err();
        match err {
            PlanError::Cycle { cycle, locations } => {
                assert_eq!(cycle, ["a", "b", "c", "a"]);
                assert_eq!(locations, ["a.toml:7", "b.toml:7", "c.toml:7"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn input_hash_is_stable_and_sensitive() {
        let s = set(vec![package("app", &["lib"]), package("lib", &[])]);
        let p1 = plan(&s, &names(&s), &[Arch::Amd64], &inputs()).unwrap();
        let p2 = plan(&s, &names(&s), &[Arch::Amd64], &inputs()).unwrap();
        assert_eq!(p1.nodes, p2.nodes);
        // A change in a dependency's recipe changes the dependent's hash.
        let mut changed = s.clone();
        changed
            .packages
            .get_mut(&PackageName::new("lib").unwrap())
            .unwrap()
            .recipe_digest = Sha256::of_bytes(b"x");
        let p3 = plan(&changed, &names(&s), &[Arch::Amd64], &inputs()).unwrap();
        assert_ne!(p1.nodes[0].input_hash, p3.nodes[0].input_hash);
        assert_ne!(p1.nodes[1].input_hash, p3.nodes[1].input_hash);
        // Arch, environment, method and SOURCE_DATE_EPOCH are inputs.
        let arm = plan(&s, &names(&s), &[Arch::Arm64], &inputs()).unwrap();
        assert_ne!(p1.nodes[1].input_hash, arm.nodes[1].input_hash);
        let mut other_env = inputs();
        other_env.environment_digest = "env2".into();
        assert_ne!(
            p1.nodes[1].input_hash,
            plan(&s, &names(&s), &[Arch::Amd64], &other_env).unwrap().nodes[1].input_hash
        );
        let mut other_method = inputs();
        other_method.method = "cross".into();
        assert_ne!(
            p1.nodes[1].input_hash,
            plan(&s, &names(&s), &[Arch::Amd64], &other_method).unwrap().nodes[1].input_hash
        );
        let mut later = s.clone();
        later.source_date_epoch = 2;
        assert_ne!(
            p1.nodes[1].input_hash,
            plan(&later, &names(&s), &[Arch::Amd64], &inputs()).unwrap().nodes[1].input_hash
        );
    }

    #[test]
    fn deps_point_backwards_and_arches_multiply() {
        let s = set(vec![package("app", &["lib"]), package("lib", &[])]);
        let p = plan(&s, &names(&s), &Arch::ALL, &inputs()).unwrap();
        assert_eq!(p.nodes.len(), 4);
        for (i, node) in p.nodes.iter().enumerate() {
            for &d in &node.deps {
                assert!(d < i);
                assert_eq!(p.nodes[d].arch, node.arch);
            }
        }
    }

    #[test]
    fn missing_local_digest_is_an_error() {
        let mut lib = package("lib", &[]);
        lib.sources = vec![Source {
            kind: SourceKind::LocalDir {
                path: PathBuf::from("src"),
            },
            dest: String::new(),
        }];
        let s = set(vec![lib]);
        assert!(matches!(
            plan(&s, &names(&s), &[Arch::Amd64], &inputs()),
            Err(PlanError::MissingLocalDigest { .. })
        ));
    }
}
