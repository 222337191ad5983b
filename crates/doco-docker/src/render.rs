//! The parsed output of `docker compose config --format json`.
//!
//! Compose does the hard part (interpolation, merging, profiles, `include`, `extends`, path
//! resolution); we read only the few fields doco-cd decides on. The model is rendered with
//! `--no-env-resolution`, so a service's `env_file` entries stay visible as paths (they are local
//! inputs whose changes matter) and the values inside them stay out of `spec`, which may be stored or
//! hashed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// A compose project as compose rendered it.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedProject {
    /// The project name.
    pub name: String,
    /// The active services (profiles applied), by name.
    pub services: BTreeMap<String, RenderedService>,
}

/// One service of a [`RenderedProject`].
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedService {
    /// `image`, if set.
    pub image: Option<String>,
    /// `restart`, if set (`no`, `always`, `unless-stopped`, `on-failure[:N]`).
    pub restart: Option<String>,
    /// `scale`, else `deploy.replicas`, else 1 (compose's own precedence).
    pub replicas: u32,
    /// Whether the service has a `build` section.
    pub has_build: bool,
    /// Whether the service has a health check that is not disabled.
    pub has_healthcheck: bool,
    /// The service's JSON as compose rendered it (env files not expanded).
    pub spec: Value,
    /// Host paths the service reads: bind-mount sources, `env_file` entries, the build context, and
    /// the files of the configs and secrets it uses. Sorted, without duplicates.
    pub local_inputs: Vec<PathBuf>,
    /// The inputs whose changes must not recreate the service (its
    /// `cd.doco.deployment.recreate.ignore` label): they are served from live copies updated in place.
    pub live_inputs: Vec<LiveInput>,
    /// Its `cd.doco.deployment.recreate.ignore.signal`: sent to its containers when a live input
    /// changed.
    pub reload_signal: Option<String>,
}

/// One input of a service that is updated in place instead of recreating the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInput {
    /// The file or directory, as compose rendered it.
    pub source: PathBuf,
    /// How the service uses it.
    pub kind: LiveKind,
}

/// How a service uses a [`LiveInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveKind {
    /// A bind mount: its entry in the service's `volumes`, as compose rendered it.
    Bind(Value),
    /// A top-level config of this name.
    Config(String),
    /// A top-level secret of this name.
    Secret(String),
}

/// The label that excludes configs, secrets and bind mounts from recreation (upstream's name).
pub const RECREATE_IGNORE_LABEL: &str = "cd.doco.deployment.recreate.ignore";
/// The signal sent instead of recreating.
pub const RECREATE_IGNORE_SIGNAL_LABEL: &str = "cd.doco.deployment.recreate.ignore.signal";

impl RenderedService {
    /// True for restart `always` / `unless-stopped`: services doco-cd must keep running. Services with
    /// no policy, `no` or `on-failure*` may legitimately be stopped (one-shot jobs), as upstream's
    /// mismatch rule says.
    pub fn must_run(&self) -> bool {
        let restart = self
            .restart
            .as_deref()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        !(restart.is_empty() || restart == "no" || restart.starts_with("on-failure"))
    }
}

/// Why compose's JSON could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RenderParseError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not shaped like a compose model.
    #[error("unexpected shape: {0}")]
    Shape(String),
}

impl RenderedProject {
    /// Parses the output of `docker compose config --format json`.
    pub fn from_json(text: &str) -> Result<RenderedProject, RenderParseError> {
        let model: Value = serde_json::from_str(text)?;
        let root = model
            .as_object()
            .ok_or_else(|| RenderParseError::Shape("the top level is not an object".into()))?;
        let name = root
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let top_files = |kind: &str| -> BTreeMap<String, PathBuf> {
            root.get(kind)
                .and_then(Value::as_object)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|(k, v)| {
                            let file = v.get("file").and_then(Value::as_str)?;
                            Some((k.clone(), PathBuf::from(file)))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let configs = top_files("configs");
        let secrets = top_files("secrets");

        let mut services = BTreeMap::new();
        if let Some(items) = root.get("services") {
            let items = items
                .as_object()
                .ok_or_else(|| RenderParseError::Shape("`services` is not an object".into()))?;
            for (service_name, spec) in items {
                if !spec.is_object() {
                    return Err(RenderParseError::Shape(format!(
                        "service `{service_name}` is not an object"
                    )));
                }
                let service = parse_service(spec, &configs, &secrets).map_err(|e| {
                    RenderParseError::Shape(format!("service `{service_name}`: {e}"))
                })?;
                services.insert(service_name.clone(), service);
            }
        }
        Ok(RenderedProject { name, services })
    }
}

fn parse_service(
    spec: &Value,
    configs: &BTreeMap<String, PathBuf>,
    secrets: &BTreeMap<String, PathBuf>,
) -> Result<RenderedService, String> {
    let str_field = |key: &str| spec.get(key).and_then(Value::as_str).map(str::to_string);
    let replicas = spec
        .get("scale")
        .and_then(Value::as_u64)
        .or_else(|| {
            spec.get("deploy")
                .and_then(|d| d.get("replicas"))
                .and_then(Value::as_u64)
        })
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let has_healthcheck = spec.get("healthcheck").is_some_and(|h| {
        let disabled = h.get("disable").and_then(Value::as_bool).unwrap_or(false);
        let none = h
            .get("test")
            .and_then(Value::as_array)
            .and_then(|t| t.first())
            .and_then(Value::as_str)
            == Some("NONE");
        !disabled && !none
    });

    let mut inputs: Vec<PathBuf> = Vec::new();
    for volume in array(spec, "volumes") {
        if volume.get("type").and_then(Value::as_str) == Some("bind")
            && let Some(source) = volume.get("source").and_then(Value::as_str)
        {
            inputs.push(PathBuf::from(source));
        }
    }
    match spec.get("env_file") {
        Some(Value::String(path)) => inputs.push(PathBuf::from(path)),
        Some(Value::Array(entries)) => {
            for entry in entries {
                let path = entry
                    .as_str()
                    .or_else(|| entry.get("path").and_then(Value::as_str));
                if let Some(path) = path {
                    inputs.push(PathBuf::from(path));
                }
            }
        }
        _ => {}
    }
    let build = spec.get("build");
    if let Some(context) = build.and_then(|b| {
        b.as_str()
            .or_else(|| b.get("context").and_then(Value::as_str))
    }) && is_local_path(context)
    {
        inputs.push(PathBuf::from(context));
    }
    for (key, files) in [("configs", configs), ("secrets", secrets)] {
        for entry in array(spec, key) {
            let source = entry
                .as_str()
                .or_else(|| entry.get("source").and_then(Value::as_str));
            if let Some(file) = source.and_then(|s| files.get(s)) {
                inputs.push(file.clone());
            }
        }
    }
    inputs.sort();
    inputs.dedup();
    let label = |key: &str| {
        spec.get("labels")
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
    };
    let live_inputs = match label(RECREATE_IGNORE_LABEL) {
        Some(text) => live_inputs(spec, &parse_ignore(text)?, configs, secrets),
        None => Vec::new(),
    };

    Ok(RenderedService {
        image: str_field("image"),
        restart: str_field("restart"),
        replicas,
        has_build: build.is_some(),
        has_healthcheck,
        spec: spec.clone(),
        local_inputs: inputs,
        live_inputs,
        reload_signal: label(RECREATE_IGNORE_SIGNAL_LABEL)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// What a `recreate.ignore` label names per scope: `None` for every item of the scope.
#[derive(Debug, Default, PartialEq)]
struct Ignore {
    bind_mounts: Option<Option<Vec<String>>>,
    configs: Option<Option<Vec<String>>>,
    secrets: Option<Option<Vec<String>>>,
}

/// Parses the label's YAML map of scope to items (`null` or empty: all items of the scope).
fn parse_ignore(text: &str) -> Result<Ignore, String> {
    let map: BTreeMap<String, Option<Vec<String>>> = serde_saphyr::from_str(text).map_err(|e| {
        format!("label {RECREATE_IGNORE_LABEL} is not a YAML map of scope to a list: {e}")
    })?;
    let mut ignore = Ignore::default();
    for (scope, items) in map {
        let items = items.filter(|list| !list.is_empty());
        match scope.as_str() {
            "bindMounts" => ignore.bind_mounts = Some(items),
            "configs" => ignore.configs = Some(items),
            "secrets" => ignore.secrets = Some(items),
            other => {
                return Err(format!(
                    "label {RECREATE_IGNORE_LABEL}: unknown scope `{other}` (use configs, secrets or bindMounts)"
                ));
            }
        }
    }
    Ok(ignore)
}

/// The service's inputs that `ignore` names: bind mounts by target path, configs and secrets by name.
fn live_inputs(
    spec: &Value,
    ignore: &Ignore,
    configs: &BTreeMap<String, PathBuf>,
    secrets: &BTreeMap<String, PathBuf>,
) -> Vec<LiveInput> {
    let named = |scope: &Option<Option<Vec<String>>>, item: &str| match scope {
        None => false,
        Some(None) => true,
        Some(Some(items)) => items.iter().any(|i| i == item),
    };
    let mut live = Vec::new();
    for volume in array(spec, "volumes") {
        let source = volume.get("source").and_then(Value::as_str);
        let target = volume.get("target").and_then(Value::as_str);
        if volume.get("type").and_then(Value::as_str) == Some("bind")
            && let (Some(source), Some(target)) = (source, target)
            && named(&ignore.bind_mounts, target)
        {
            live.push(LiveInput {
                source: PathBuf::from(source),
                kind: LiveKind::Bind(volume.clone()),
            });
        }
    }
    for (key, files, scope) in [
        ("configs", configs, &ignore.configs),
        ("secrets", secrets, &ignore.secrets),
    ] {
        for entry in array(spec, key) {
            let Some(name) = entry
                .as_str()
                .or_else(|| entry.get("source").and_then(Value::as_str))
            else {
                continue;
            };
            if let Some(file) = files.get(name).filter(|_| named(scope, name)) {
                let kind = if key == "configs" {
                    LiveKind::Config(name.to_string())
                } else {
                    LiveKind::Secret(name.to_string())
                };
                live.push(LiveInput {
                    source: file.clone(),
                    kind,
                });
            }
        }
    }
    live
}

fn array<'a>(spec: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A build context is a local path unless it is a URL (`https://…`, `git@…`, `git://…`).
fn is_local_path(context: &str) -> bool {
    !(context.contains("://") || context.starts_with("git@"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Real output of `docker compose -p ddsample --project-directory /tmp/dd-sample -f compose.yaml
    /// config --format json --no-env-resolution` (compose v5.6.1); see the fixture's neighbour
    /// `config-sample.compose.yaml` for the input.
    const FIXTURE: &str = include_str!("../tests/fixtures/config-sample.json");

    fn sample() -> RenderedProject {
        RenderedProject::from_json(FIXTURE).unwrap()
    }

    #[test]
    fn the_recreate_ignore_label_names_live_inputs_by_bind_target_and_config_name() {
        let json = r#"{
          "name": "p",
          "configs": {"app": {"file": "/repo/app.conf"}, "other": {"file": "/repo/other.conf"}},
          "services": {"proxy": {
            "image": "x",
            "labels": {
              "cd.doco.deployment.recreate.ignore": "{bindMounts: [/conf], configs: [app]}",
              "cd.doco.deployment.recreate.ignore.signal": "SIGHUP"
            },
            "volumes": [
              {"type": "bind", "source": "/repo/conf", "target": "/conf", "read_only": true},
              {"type": "bind", "source": "/repo/data", "target": "/data"}
            ],
            "configs": [{"source": "app", "target": "/app"}, {"source": "other", "target": "/other"}]
          }}
        }"#;
        let proxy = &RenderedProject::from_json(json).unwrap().services["proxy"];
        let sources: Vec<&str> = proxy
            .live_inputs
            .iter()
            .map(|i| i.source.to_str().unwrap())
            .collect();
        assert_eq!(sources, ["/repo/conf", "/repo/app.conf"]);
        assert!(matches!(&proxy.live_inputs[0].kind, LiveKind::Bind(v) if v["read_only"] == true));
        assert_eq!(proxy.live_inputs[1].kind, LiveKind::Config("app".into()));
        assert_eq!(proxy.reload_signal.as_deref(), Some("SIGHUP"));

        let all = json.replace("{bindMounts: [/conf], configs: [app]}", "bindMounts:");
        let proxy = &RenderedProject::from_json(&all).unwrap().services["proxy"];
        assert_eq!(proxy.live_inputs.len(), 2, "null: every bind mount");

        let wrong = json.replace(
            "{bindMounts: [/conf], configs: [app]}",
            "{volumes: [/conf]}",
        );
        let err = RenderedProject::from_json(&wrong).unwrap_err().to_string();
        assert!(
            err.contains("service `proxy`") && err.contains("unknown scope `volumes`"),
            "{err}"
        );
    }

    #[test]
    fn reads_name_and_services() {
        let p = sample();
        assert_eq!(p.name, "ddsample");
        assert_eq!(
            p.services.keys().collect::<Vec<_>>(),
            ["builder", "job", "web"]
        );
    }

    #[test]
    fn reads_restart_replicas_image_build_healthcheck() {
        let p = sample();
        let web = &p.services["web"];
        assert_eq!(web.image.as_deref(), Some("doco-test/busybox:1"));
        assert_eq!(web.restart.as_deref(), Some("unless-stopped"));
        assert_eq!(web.replicas, 2);
        assert!(web.has_healthcheck);
        assert!(!web.has_build);
        assert!(web.must_run());

        let job = &p.services["job"];
        assert_eq!(job.replicas, 3);
        assert_eq!(job.restart, None);
        assert!(!job.must_run());
        assert!(!job.has_healthcheck);

        let builder = &p.services["builder"];
        assert!(builder.has_build);
        assert_eq!(builder.image, None);
        assert_eq!(builder.replicas, 1);
        assert!(builder.must_run());
        assert_eq!(builder.local_inputs, [PathBuf::from("/tmp/dd-sample/ctx")]);
    }

    #[test]
    fn collects_local_inputs() {
        let p = sample();
        let want: Vec<PathBuf> = [
            "/tmp/dd-sample/app.env",
            "/tmp/dd-sample/cfg",
            "/tmp/dd-sample/cfg/app.conf",
            "/tmp/dd-sample/data",
            "/tmp/dd-sample/secret.txt",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(p.services["web"].local_inputs, want);
        assert!(p.services["job"].local_inputs.is_empty());
    }

    #[test]
    fn spec_is_the_service_json_without_env_file_values() {
        let p = sample();
        let spec = &p.services["web"].spec;
        assert_eq!(spec["labels"]["a"], "b");
        assert!(spec.get("environment").is_none(), "{spec}");
        assert_eq!(spec["env_file"][0]["path"], "/tmp/dd-sample/app.env");
    }

    #[test]
    fn must_run_follows_upstreams_rule() {
        let svc = |restart: Option<&str>| RenderedService {
            image: None,
            restart: restart.map(str::to_string),
            replicas: 1,
            has_build: false,
            has_healthcheck: false,
            spec: Value::Null,
            local_inputs: vec![],
            live_inputs: vec![],
            reload_signal: None,
        };
        assert!(svc(Some("always")).must_run());
        assert!(svc(Some("unless-stopped")).must_run());
        assert!(svc(Some(" Always ")).must_run());
        assert!(!svc(None).must_run());
        assert!(!svc(Some("no")).must_run());
        assert!(!svc(Some("on-failure")).must_run());
        assert!(!svc(Some("on-failure:3")).must_run());
    }

    #[test]
    fn disabled_healthcheck_and_zero_scale() {
        let json = r#"{"name":"p","services":{
            "a":{"image":"x","healthcheck":{"disable":true},"scale":0},
            "b":{"image":"x","healthcheck":{"test":["NONE"]},"deploy":{"replicas":4}},
            "c":{"build":{"context":"https://example.com/repo.git"}}}}"#;
        let p = RenderedProject::from_json(json).unwrap();
        assert!(!p.services["a"].has_healthcheck);
        assert_eq!(p.services["a"].replicas, 0);
        assert!(!p.services["b"].has_healthcheck);
        assert_eq!(p.services["b"].replicas, 4);
        assert!(p.services["c"].has_build);
        assert!(p.services["c"].local_inputs.is_empty());
    }

    #[test]
    fn rejects_what_is_not_a_compose_model() {
        assert!(matches!(
            RenderedProject::from_json("nope"),
            Err(RenderParseError::Json(_))
        ));
        assert!(matches!(
            RenderedProject::from_json("[1]"),
            Err(RenderParseError::Shape(_))
        ));
        assert!(matches!(
            RenderedProject::from_json(r#"{"services":{"a":1}}"#),
            Err(RenderParseError::Shape(_))
        ));
    }
}
