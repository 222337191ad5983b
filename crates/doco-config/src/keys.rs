//! Unknown-key detection for the non-strict YAML schemas.
//!
//! Upstream ignores keys it does not know, so a typo (`compose_file:`) silently falls back to a
//! default. We accept the same files but report each unknown key as a warning, with the closest
//! known key when one is near, and name the new key for the keys renamed upstream in v0.8x.

use serde_json::Value;

use crate::values::closest;

/// Top-level keys of a deployment.
pub const DEPLOY_KEYS: &[&str] = &[
    "name",
    "source",
    "version",
    "reference",
    "repository_url",
    "webhook_filter",
    "context",
    "working_dir",
    "compose_files",
    "environment",
    "env_files",
    "profiles",
    "remove_orphans",
    "prune_images",
    "wait_running_jobs",
    "force_recreate",
    "force_image_pull",
    "timeout",
    "git_depth",
    "build",
    "destroy",
    "auto_discovery",
    "reconciliation",
    "swarm",
    "external_secrets",
    "oci",
];

/// Top-level keys of a poll entry.
pub const POLL_KEYS: &[&str] = &[
    "source",
    "url",
    "reference",
    "interval",
    "target",
    "run_once",
    "watch",
    "deployments",
];

const BUILD_KEYS: &[&str] = &["force_image_pull", "quiet", "args", "no_cache"];
const DESTROY_KEYS: &[&str] = &["enabled", "remove_volumes", "remove_images", "remove_dir"];
const AUTO_DISCOVERY_KEYS: &[&str] = &[
    "enabled",
    "depth",
    "delete",
    "remove_volumes",
    "remove_images",
];
const RECONCILIATION_KEYS: &[&str] = &[
    "enabled",
    "events",
    "restart_timeout",
    "restart_signal",
    "restart_limit",
    "restart_window",
];
const SWARM_KEYS: &[&str] = &["config_retention", "secret_retention"];
const OCI_KEYS: &[&str] = &["verify", "keyless_identities", "public_keys", "ignore_tlog"];

/// Keys renamed upstream (#1306) and now ignored there: old name → new name.
const LEGACY_KEYS: &[(&str, &str)] = &[
    ("auto_discover", "auto_discovery"),
    ("auto_discover_opts", "auto_discovery"),
    ("destroy_opts", "destroy"),
    ("build_opts", "build"),
];

/// Warnings for unknown keys of one deployment document (`prefix` is prepended to key paths,
/// e.g. `deployments[0].`).
pub fn deploy_warnings(doc: &Value, prefix: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(map) = doc.as_object() else {
        return warnings;
    };
    for (key, value) in map {
        if let Some((_, new)) = LEGACY_KEYS.iter().find(|(old, _)| old == key) {
            warnings.push(format!(
                "`{prefix}{key}` is a legacy key and is ignored: use `{prefix}{new}` instead"
            ));
            continue;
        }
        if !DEPLOY_KEYS.contains(&key.as_str()) {
            warnings.push(unknown(prefix, key, DEPLOY_KEYS));
            continue;
        }
        let nested = match key.as_str() {
            "build" => BUILD_KEYS,
            "destroy" => DESTROY_KEYS,
            "auto_discovery" => AUTO_DISCOVERY_KEYS,
            "reconciliation" => RECONCILIATION_KEYS,
            "swarm" => SWARM_KEYS,
            "oci" => OCI_KEYS,
            _ => continue,
        };
        nested_warnings(value, &format!("{prefix}{key}."), nested, &mut warnings);
    }
    warnings
}

/// Warnings for unknown keys of one poll entry, including its inline deployments.
pub fn poll_warnings(entry: &Value, prefix: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(map) = entry.as_object() else {
        return warnings;
    };
    for (key, value) in map {
        if !POLL_KEYS.contains(&key.as_str()) {
            warnings.push(unknown(prefix, key, POLL_KEYS));
        } else if key == "deployments" {
            for (i, deployment) in value.as_array().into_iter().flatten().enumerate() {
                warnings.extend(deploy_warnings(
                    deployment,
                    &format!("{prefix}deployments[{i}]."),
                ));
            }
        }
    }
    warnings
}

fn nested_warnings(value: &Value, prefix: &str, known: &[&str], warnings: &mut Vec<String>) {
    if let Some(map) = value.as_object() {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                warnings.push(unknown(prefix, key, known));
            }
        }
    }
}

fn unknown(prefix: &str, key: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(suggestion) => {
            format!("unknown key `{prefix}{key}` is ignored: did you mean `{prefix}{suggestion}`?")
        }
        None => format!("unknown key `{prefix}{key}` is ignored"),
    }
}
