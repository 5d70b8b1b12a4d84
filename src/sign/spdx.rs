//! SPDX 2.3 JSON for one artifact (`<artifact>.spdx.json`). Pure: [`document`] turns
//! [`SbomInputs`] into JSON and does no IO.
//!
//! Shape: the document DESCRIBES the artifact (a package with `filesAnalyzed` and its
//! verification code); the artifact CONTAINS every file (SHA-1 and SHA-256); the artifact is
//! GENERATED_FROM every package of the set built into it (version, license, first download
//! URL, source sha256, purl); package dependencies are BUILD_DEPENDENCY_OF; every `.deb` of
//! the build environment is BUILD_TOOL_OF the artifact (purl `pkg:deb/debian/...`).
//! Deterministic: the namespace comes from the artifact digest, `created` from
//! SOURCE_DATE_EPOCH, everything is sorted.

use super::sbom::{spdx_id_part, SbomInputs};
use serde_json::{json, Value};
use sha1::Digest as _;
use std::collections::BTreeMap;

const NOASSERTION: &str = "NOASSERTION";
const ARTIFACT_ID: &str = "SPDXRef-Artifact";
/// Namespaces are URIs that are never fetched; `.invalid` (RFC 2606) can never resolve.
const NAMESPACE_BASE: &str = "https://hb.invalid/spdx";

/// The SPDX document for `inputs`.
pub fn document(inputs: &SbomInputs) -> Value {
    let mut ids = UniqueIds::default();
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", ARTIFACT_ID)];

    let mut files = Vec::new();
    for file in &inputs.files {
        let id = ids.make("SPDXRef-File-", &file.path);
        files.push(json!({
            "SPDXID": id,
            "fileName": format!("./{}", file.path),
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": file.sha1},
                {"algorithm": "SHA256", "checksumValue": file.sha256},
            ],
            "licenseConcluded": NOASSERTION,
            "copyrightText": NOASSERTION,
        }));
        relationships.push(relationship(ARTIFACT_ID, "CONTAINS", &id));
    }

    let mut packages = vec![artifact_package(inputs)];
    let mut package_ids = BTreeMap::new();
    for package in &inputs.packages {
        let id = ids.make("SPDXRef-Package-", &package.name);
        package_ids.insert(package.name.clone(), id.clone());
        let mut value = json!({
            "SPDXID": id,
            "name": package.name,
            "versionInfo": package.version,
            "downloadLocation": package.download_location().unwrap_or(NOASSERTION),
            "filesAnalyzed": false,
            "licenseConcluded": package.license,
            "licenseDeclared": package.license,
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "SOURCE",
            "externalRefs": [purl_ref(&package.purl)],
        });
        if let Some((_, sha256)) = package.sources.first() {
            value["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha256}]);
        }
        if !package.sources.is_empty() {
            let listed: Vec<String> = package
                .sources
                .iter()
                .map(|(urls, sha256)| format!("{} (sha256 {sha256})", urls.join(" | ")))
                .collect();
            value["sourceInfo"] = json!(format!("built by hb from: {}", listed.join(", ")));
        }
        if let Some(homepage) = &package.homepage {
            value["homepage"] = json!(homepage);
        }
        if let Some(description) = &package.description {
            value["summary"] = json!(description);
        }
        packages.push(value);
        relationships.push(relationship(ARTIFACT_ID, "GENERATED_FROM", &id));
    }
    for package in &inputs.packages {
        for dependency in &package.depends {
            if let (Some(from), Some(to)) = (package_ids.get(dependency), package_ids.get(&package.name)) {
                relationships.push(relationship(from, "BUILD_DEPENDENCY_OF", to));
            }
        }
    }
    for deb in &inputs.debs {
        let id = ids.make("SPDXRef-Deb-", &format!("{}-{}", deb.deb.name, deb.deb.arch));
        packages.push(json!({
            "SPDXID": id,
            "name": deb.deb.name,
            "versionInfo": deb.deb.version,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": deb.deb.sha256}],
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "INSTALL",
            "sourceInfo": format!("build environment package, fetched as {}", deb.deb.url()),
            "externalRefs": [purl_ref(&deb.purl)],
        }));
        relationships.push(relationship(&id, "BUILD_TOOL_OF", ARTIFACT_ID));
    }

    let mut comment = format!(
        "{} for {} built by hb from the recipe set {:?}",
        inputs.artifact_name, inputs.arch, inputs.set_name
    );
    if inputs.impure_environment {
        comment.push_str("; built in the host environment (impure): its build tools are not recorded");
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": inputs.artifact_name,
        "documentNamespace": format!("{NAMESPACE_BASE}/{}-{}", inputs.artifact_name, inputs.artifact_sha256),
        "comment": comment,
        "creationInfo": {
            "created": super::rfc3339(inputs.source_date_epoch),
            "creators": [format!("Tool: hb-{}", inputs.hb_version)],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    })
}

fn artifact_package(inputs: &SbomInputs) -> Value {
    json!({
        "SPDXID": ARTIFACT_ID,
        "name": inputs.artifact_name,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": true,
        "packageVerificationCode": {"packageVerificationCodeValue": verification_code(inputs)},
        "checksums": [{"algorithm": "SHA256", "checksumValue": inputs.artifact_sha256}],
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "ARCHIVE",
        "builtDate": super::rfc3339(inputs.source_date_epoch),
    })
}

/// SPDX 2.3 §7.9: SHA-1 over the sorted, concatenated SHA-1 hex digests of the files.
fn verification_code(inputs: &SbomInputs) -> String {
    let mut digests: Vec<&str> = inputs.files.iter().map(|f| f.sha1.as_str()).collect();
    digests.sort_unstable();
    hex::encode(sha1::Sha1::digest(digests.concat().as_bytes()))
}

fn purl_ref(purl: &str) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl})
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

/// SPDX ids from names, made unique in the order they are asked for (which is sorted).
#[derive(Default)]
struct UniqueIds {
    seen: BTreeMap<String, usize>,
}

impl UniqueIds {
    fn make(&mut self, prefix: &str, name: &str) -> String {
        let base = format!("{prefix}{}", spdx_id_part(name));
        let count = self.seen.entry(base.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            base
        } else {
            format!("{base}-{count}")
        }
    }
}
