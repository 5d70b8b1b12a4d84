//! CycloneDX 1.6 JSON for one artifact (`<artifact>.cdx.json`). Pure: [`document`] turns
//! [`SbomInputs`] into JSON and does no IO.
//!
//! Shape: `metadata.component` is the artifact (a `file` with its SHA-256), and its nested
//! `components` are the files it contains (SHA-1 and SHA-256); top-level `components` are the
//! packages of the set built into it (version, license expression, purl, the source URL and
//! sha256 as a `distribution` reference); `dependencies` say the artifact was generated from
//! those packages and which package was built against which; `formulation` lists the build
//! tools: every `.deb` of the environment (purl `pkg:deb/debian/...`). Deterministic: the
//! serial number is a name-based UUID of the artifact digest, the timestamp is
//! SOURCE_DATE_EPOCH, everything is sorted.

use super::sbom::{uuid_v5, SbomInputs};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The CycloneDX document for `inputs`.
pub fn document(inputs: &SbomInputs) -> Value {
    let artifact_ref = format!("artifact:{}", inputs.artifact_name);
    let files: Vec<Value> = inputs
        .files
        .iter()
        .map(|file| {
            json!({
                "type": "file",
                "bom-ref": format!("file:{}", file.path),
                "name": file.path,
                "hashes": [
                    {"alg": "SHA-1", "content": file.sha1},
                    {"alg": "SHA-256", "content": file.sha256},
                ],
            })
        })
        .collect();

    let mut refs = BTreeMap::new();
    let mut components = Vec::new();
    for package in &inputs.packages {
        refs.insert(package.name.clone(), package.purl.clone());
        let mut value = json!({
            "type": "application",
            "bom-ref": package.purl,
            "name": package.name,
            "version": package.version,
            "licenses": [{"expression": package.license}],
            "purl": package.purl,
        });
        let references: Vec<Value> = package
            .sources
            .iter()
            .map(|(urls, sha256)| {
                json!({
                    "type": "distribution",
                    "url": urls[0],
                    "comment": "source archive hb built from (pinned by sha256)",
                    "hashes": [{"alg": "SHA-256", "content": sha256}],
                })
            })
            .chain(
                package
                    .homepage
                    .iter()
                    .map(|homepage| json!({"type": "website", "url": homepage})),
            )
            .collect();
        if !references.is_empty() {
            value["externalReferences"] = json!(references);
        }
        if let Some(description) = &package.description {
            value["description"] = json!(description);
        }
        components.push(value);
    }

    let mut dependencies = vec![json!({
        "ref": artifact_ref,
        "dependsOn": inputs.packages.iter().map(|p| p.purl.clone()).collect::<Vec<_>>(),
    })];
    for package in &inputs.packages {
        let depends: Vec<&String> = package.depends.iter().filter_map(|d| refs.get(d)).collect();
        dependencies.push(json!({"ref": package.purl, "dependsOn": depends}));
    }

    let tools: Vec<Value> = inputs
        .debs
        .iter()
        .map(|deb| {
            json!({
                "type": "application",
                "bom-ref": deb.purl,
                "name": deb.deb.name,
                "version": deb.deb.version,
                "purl": deb.purl,
                "hashes": [{"alg": "SHA-256", "content": deb.deb.sha256}],
                "properties": [{"name": "hb:url", "value": deb.deb.url()}],
            })
        })
        .collect();

    let mut properties = vec![
        json!({"name": "hb:set", "value": inputs.set_name}),
        json!({"name": "hb:arch", "value": inputs.arch.as_str()}),
        json!({"name": "hb:source_date_epoch", "value": inputs.source_date_epoch.to_string()}),
    ];
    if inputs.impure_environment {
        properties.push(json!({"name": "hb:environment", "value": "host (impure): build tools not recorded"}));
    }
    let mut bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_v5(&format!("hb:cyclonedx:{}", inputs.artifact_sha256))),
        "version": 1,
        "metadata": {
            "timestamp": super::rfc3339(inputs.source_date_epoch),
            "tools": {"components": [{"type": "application", "name": "hb", "version": inputs.hb_version}]},
            "component": {
                "type": "file",
                "bom-ref": artifact_ref,
                "name": inputs.artifact_name,
                "hashes": [{"alg": "SHA-256", "content": inputs.artifact_sha256}],
                "components": files,
            },
            "properties": properties,
        },
        "components": components,
        "dependencies": dependencies,
    });
    if !tools.is_empty() {
        bom["formulation"] = json!([{
            "bom-ref": format!("formulation:{}", inputs.artifact_name),
            "components": tools,
        }]);
    }
    bom
}
