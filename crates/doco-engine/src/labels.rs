//! The `cd.doco.*` labels a deploy gives a changed service, with upstream's keys and values, so that
//! stacks deployed by upstream doco-cd and by this implementation adopt each other.
//!
//! Unchanged services never get fresh labels: they keep the ones recorded in the state file (see
//! `plan`), because any changed label value would make compose recreate them.

use std::collections::BTreeMap;

use doco_docker::labels as key;

/// Everything the labels of one deploy are made of.
#[derive(Debug, Clone)]
pub struct LabelContext<'a> {
    /// The deployment (stack) name.
    pub deployment: &'a str,
    /// The deployed commit.
    pub commit: &'a str,
    /// The reference followed.
    pub reference: &'a str,
    /// The working directory as the daemon sees it.
    pub working_dir: &'a str,
    /// The deploy-config target (`""` for `.doco-cd.yml`).
    pub target: &'a str,
    /// The deploy-config hash.
    pub config_hash: &'a str,
    /// The project hash.
    pub compose_hash: &'a str,
    /// upstream's full repository name (`owner/repo`).
    pub source_name: &'a str,
    /// The repository URL without credentials.
    pub source_url: &'a str,
    /// JSON of the auto-discovery settings.
    pub auto_discovery_config: &'a str,
    /// Whether the deployment was auto-discovered.
    pub auto_discovered: bool,
    /// RFC 3339 time of the deploy.
    pub timestamp: &'a str,
    /// upstream's trigger value: `poll`, or the commit for a webhook.
    pub trigger: &'a str,
}

/// The label keys doco-cd writes: [`fresh_labels`] sets exactly these.
pub const OWN_KEYS: [&str; 16] = [
    key::MANAGER,
    key::VERSION,
    key::DEPLOYMENT_NAME,
    key::DEPLOYMENT_TIMESTAMP,
    key::DEPLOYMENT_COMPOSE_SHA,
    key::DEPLOYMENT_WORKING_DIR,
    key::DEPLOYMENT_CONFIG_TARGET,
    key::DEPLOYMENT_TARGET_REF,
    key::DEPLOYMENT_TARGET_SHA,
    key::DEPLOYMENT_TRIGGER,
    key::DEPLOYMENT_CONFIG_SHA,
    key::DEPLOYMENT_AUTO_DISCOVERY,
    key::DEPLOYMENT_AUTO_DISCOVERY_CONFIG,
    key::SOURCE,
    key::SOURCE_NAME,
    key::SOURCE_URL,
];

/// Labels a running deployment can be adopted with when the state file lost its record: the
/// doco-cd labels of each service's containers that were deployed from `commit`. Reusing them keeps
/// compose's config hash, so nothing is recreated because the record was lost.
pub fn adoptable_labels(
    containers: &[doco_docker::ContainerInfo],
    commit: &str,
) -> BTreeMap<String, BTreeMap<String, String>> {
    containers
        .iter()
        .filter(|c| !c.oneoff)
        .filter(|c| c.labels.get(key::DEPLOYMENT_TARGET_SHA).map(String::as_str) == Some(commit))
        .filter(|c| c.labels.get(key::MANAGER).map(String::as_str) == Some(key::MANAGER_VALUE))
        .map(|c| {
            // Upstream ≥ v0.120 also pins unchanged services to the export they were created from.
            let own = OWN_KEYS
                .iter()
                .chain([&key::DEPLOYMENT_PINNED_REVISIONS])
                .filter_map(|k| c.labels.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            (c.service.clone(), own)
        })
        .collect()
}

/// The labels for a service deployed now.
pub fn fresh_labels(ctx: &LabelContext<'_>) -> BTreeMap<String, String> {
    [
        (key::MANAGER, key::MANAGER_VALUE),
        (key::VERSION, env!("CARGO_PKG_VERSION")),
        (key::DEPLOYMENT_NAME, ctx.deployment),
        (key::DEPLOYMENT_TIMESTAMP, ctx.timestamp),
        (key::DEPLOYMENT_COMPOSE_SHA, ctx.compose_hash),
        (key::DEPLOYMENT_WORKING_DIR, ctx.working_dir),
        (key::DEPLOYMENT_CONFIG_TARGET, ctx.target),
        (key::DEPLOYMENT_TARGET_REF, ctx.reference),
        (key::DEPLOYMENT_TARGET_SHA, ctx.commit),
        (key::DEPLOYMENT_TRIGGER, ctx.trigger),
        (key::DEPLOYMENT_CONFIG_SHA, ctx.config_hash),
        (
            key::DEPLOYMENT_AUTO_DISCOVERY,
            if ctx.auto_discovered { "true" } else { "false" },
        ),
        (
            key::DEPLOYMENT_AUTO_DISCOVERY_CONFIG,
            ctx.auto_discovery_config,
        ),
        (key::SOURCE, "git"),
        (key::SOURCE_NAME, ctx.source_name),
        (key::SOURCE_URL, ctx.source_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carries_upstream_keys_and_the_commit() {
        let labels = fresh_labels(&LabelContext {
            deployment: "web",
            commit: "abc",
            reference: "refs/heads/main",
            working_dir: "/data/h/o/r",
            target: "",
            config_hash: "cfg",
            compose_hash: "proj",
            source_name: "o/r",
            source_url: "https://h/o/r.git",
            auto_discovery_config: "{}",
            auto_discovered: false,
            timestamp: "2026-01-01T00:00:00Z",
            trigger: "poll",
        });
        assert_eq!(labels["cd.doco.metadata.manager"], "doco-cd");
        assert_eq!(labels["cd.doco.deployment.target.sha"], "abc");
        assert_eq!(labels["cd.doco.deployment.name"], "web");
        assert_eq!(labels["cd.doco.source.name"], "o/r");
        assert_eq!(labels["cd.doco.deployment.trigger"], "poll");
        assert_eq!(labels.len(), OWN_KEYS.len());
        assert!(OWN_KEYS.iter().all(|k| labels.contains_key(*k)));
    }

    #[test]
    fn adopts_only_doco_labels_of_containers_at_the_commit() {
        let container = |service: &str, sha: &str| doco_docker::ContainerInfo {
            id: service.into(),
            name: service.into(),
            project: "p".into(),
            service: service.into(),
            state: doco_docker::ContainerState::Running,
            labels: BTreeMap::from([
                (key::MANAGER.to_string(), "doco-cd".to_string()),
                (key::DEPLOYMENT_TARGET_SHA.to_string(), sha.to_string()),
                (
                    key::DEPLOYMENT_PINNED_REVISIONS.to_string(),
                    sha.to_string(),
                ),
                ("user.label".to_string(), "x".to_string()),
            ]),
            config_hash: None,
            oneoff: false,
            health: doco_docker::Health::None,
            image_id: String::new(),
        };
        let adopted = adoptable_labels(&[container("web", "c1"), container("old", "c0")], "c1");
        assert_eq!(adopted.keys().collect::<Vec<_>>(), vec!["web"]);
        assert!(!adopted["web"].contains_key("user.label"));
        assert_eq!(adopted["web"][key::DEPLOYMENT_TARGET_SHA], "c1");
        assert_eq!(adopted["web"][key::DEPLOYMENT_PINNED_REVISIONS], "c1");
    }
}
