//! Compose projects, as upstream's `/v1/api/project*` handlers (which use compose's `ls`, `ps`,
//! `start`, `stop`, `restart` and `down`):
//!
//! - `GET /v1/api/projects?all=`: every Compose project on the engine (not only doco-cd's, as
//!   upstream's `compose ls`); without `all=true` only projects with running containers, counted from
//!   running containers. Fields as compose's `Stack`: `ID`, `Name`, `Status` (`running(2)`,
//!   `exited(1), running(1)`), `ConfigFiles`, `Reason`. None: 404 `no projects found`.
//! - `GET /v1/api/project/{name}`: its containers, running or not (compose's `ContainerSummary`
//!   fields); none: 404.
//! - `DELETE /v1/api/project/{name}?volumes=true&images=true&timeout=30`: `docker compose down
//!   --remove-orphans` with `--volumes` / `--rmi all` (both default true, as upstream).
//!   `images=false` removes no image (upstream still removes compose-built untagged ones).
//! - `POST /v1/api/project/{name}/{start|stop|restart}?timeout=30`: on each of its containers
//!   through the Engine API; 404 when it has none, 400 for another action.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use doco_docker::ProjectContainer;
use serde_json::{Value, json};
use tracing::{error, info};

use super::{Api, Params, error, job_id, ok, unauthorized, wrong_method};

const PROJECT: &str = "com.docker.compose.project";
const SERVICE: &str = "com.docker.compose.service";
const CONFIG_FILES: &str = "com.docker.compose.project.config_files";

/// `GET /v1/api/projects?all=`.
pub async fn list(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if method != Method::GET {
        return super::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid http method",
            json!("requires GET method"),
            "",
        );
    }
    let job_id = job_id();
    if !api.authorized(&headers) {
        return unauthorized(&job_id);
    }
    let all = match Params(query).bool("all", false, &job_id) {
        Ok(all) => all,
        Err(response) => return *response,
    };
    let containers = match api.docker.project_containers(None, all).await {
        Ok(containers) => containers,
        Err(e) => {
            error!(error = %e, "failed to get projects");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
                json!("failed to get projects"),
                &job_id,
            );
        }
    };
    let projects = stacks(&containers);
    if projects.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "no projects found",
            Value::Null,
            &job_id,
        );
    }
    ok(StatusCode::OK, Value::Array(projects), &job_id)
}

/// compose's `ls` view: one entry per project.
fn stacks(containers: &[ProjectContainer]) -> Vec<Value> {
    let mut projects: BTreeMap<&str, (BTreeMap<&str, usize>, BTreeSet<&str>)> = BTreeMap::new();
    for container in containers {
        let Some(project) = container.labels.get(PROJECT) else {
            continue;
        };
        let (states, files) = projects.entry(project).or_default();
        *states.entry(container.state.as_str()).or_default() += 1;
        if let Some(config_files) = container.labels.get(CONFIG_FILES) {
            files.extend(config_files.split(',').filter(|f| !f.is_empty()));
        }
    }
    projects
        .into_iter()
        .map(|(name, (states, files))| {
            let status = states
                .iter()
                .map(|(state, n)| format!("{state}({n})"))
                .collect::<Vec<_>>()
                .join(", ");
            json!({
                "ID": name,
                "Name": name,
                "Status": status,
                "ConfigFiles": files.into_iter().collect::<Vec<_>>().join(","),
                "Reason": "",
            })
        })
        .collect()
}

/// compose's `ContainerSummary` of one container.
fn summary(container: &ProjectContainer) -> Value {
    let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
    // "Exited (137) 3 seconds ago" → 137.
    let exit_code = container
        .status
        .strip_prefix("Exited (")
        .and_then(|rest| rest.split(')').next())
        .and_then(|code| code.parse::<i64>().ok())
        .unwrap_or(0);
    let publishers: Vec<Value> = container
        .ports
        .iter()
        .map(|(ip, target, published, protocol)| {
            json!({
                "URL": ip,
                "TargetPort": target,
                "PublishedPort": published.unwrap_or(0),
                "Protocol": protocol,
            })
        })
        .collect();
    json!({
        "ID": container.id,
        "Name": container.names.first().cloned().unwrap_or_default(),
        "Names": container.names,
        "Image": container.image,
        "Command": container.command,
        "Project": label(PROJECT),
        "Service": label(SERVICE),
        "Created": container.created,
        "State": container.state,
        "Status": container.status,
        "Health": container.health,
        "ExitCode": exit_code,
        "Publishers": publishers,
        "Networks": container.networks,
        "LocalVolumes": container.local_volumes,
        "Labels": container.labels,
        "Mounts": container.mounts,
    })
}

/// `GET` or `DELETE /v1/api/project/{projectName}`.
pub async fn one(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let job_id = job_id();
    if !api.authorized(&headers) {
        return unauthorized(&job_id);
    }
    match method {
        Method::GET => {
            let containers = match api.docker.project_containers(Some(&name), true).await {
                Ok(containers) => containers,
                Err(e) => return failed(&format!("failed to get project: {name}"), &e, &job_id),
            };
            if containers.is_empty() {
                return not_found(&name, &job_id);
            }
            let summaries: Vec<Value> = containers.iter().map(summary).collect();
            ok(StatusCode::OK, Value::Array(summaries), &job_id)
        }
        Method::DELETE => {
            let params = Params(query);
            let parsed = params.int("timeout", 30, &job_id).and_then(|_| {
                Ok((
                    params.bool("volumes", true, &job_id)?,
                    params.bool("images", true, &job_id)?,
                ))
            });
            let (volumes, images) = match parsed {
                Ok(flags) => flags,
                Err(response) => return *response,
            };
            info!(job_id, project = %name, remove_volumes = volumes, remove_images = images, "removing project");
            match api.compose.down(&name, volumes, images).await {
                Ok(()) => ok(
                    StatusCode::OK,
                    json!(format!("project removed: {name}")),
                    &job_id,
                ),
                Err(e) => failed(&format!("failed to remove project: {name}"), &e, &job_id),
            }
        }
        _ => super::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid http method",
            Value::Null,
            "",
        ),
    }
}

/// `POST /v1/api/project/{projectName}/{start|stop|restart}`.
pub async fn action(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let job_id = job_id();
    if !api.authorized(&headers) {
        return unauthorized(&job_id);
    }
    let timeout = match Params(query).int("timeout", 30, &job_id) {
        Ok(timeout) => i32::try_from(timeout.max(0)).unwrap_or(i32::MAX),
        Err(response) => return *response,
    };
    let containers = match api.docker.project_containers(Some(&name), true).await {
        Ok(containers) => containers,
        Err(e) => return failed(&format!("failed to get project: {name}"), &e, &job_id),
    };
    if containers.is_empty() {
        return not_found(&name, &job_id);
    }
    let (verb, done) = match action.as_str() {
        "start" => ("start", "started"),
        "stop" => ("stop", "stopped"),
        "restart" => ("restart", "restarted"),
        _ => {
            error!(job_id, %action, "invalid action");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid action",
                json!(format!("action not supported: {action}")),
                &job_id,
            );
        }
    };
    if method != Method::POST {
        return wrong_method(&Method::POST);
    }
    info!(job_id, project = %name, "{verb} project");
    let mut failures = Vec::new();
    for container in &containers {
        let result = match verb {
            "start" => api.docker.start_container(&container.id).await,
            "stop" if container.state == "running" || container.state == "restarting" => {
                api.docker.stop_container(&container.id, timeout).await
            }
            "stop" => Ok(()),
            _ => {
                api.docker
                    .restart_container(&container.id, timeout, None)
                    .await
            }
        };
        if let Err(e) = result {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        let message = format!("failed to {verb} project");
        error!(job_id, project = %name, errors = ?failures, "{message}");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &failures.join("; "),
            json!(message),
            &job_id,
        );
    }
    ok(
        StatusCode::OK,
        json!(format!("project {done}: {name}")),
        &job_id,
    )
}

fn not_found(name: &str, job_id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("project not found: {name}"),
        Value::Null,
        job_id,
    )
}

fn failed(message: &str, e: &dyn std::fmt::Display, job_id: &str) -> Response {
    error!(job_id, error = %e, "{message}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        message,
        json!(e.to_string()),
        job_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(project: &str, state: &str, files: &str) -> ProjectContainer {
        ProjectContainer {
            id: format!("{project}-{state}"),
            state: state.into(),
            labels: BTreeMap::from([
                (PROJECT.to_string(), project.to_string()),
                (CONFIG_FILES.to_string(), files.to_string()),
            ]),
            ..ProjectContainer::default()
        }
    }

    #[test]
    fn projects_are_listed_as_compose_ls_does() {
        let containers = [
            container("b", "running", "/r/compose.yml"),
            container("a", "running", "/r/compose.yml,/r/override.yml"),
            container("a", "exited", "/r/compose.yml"),
            container("a", "running", "/r/compose.yml"),
        ];
        let listed = stacks(&containers);
        assert_eq!(
            listed,
            [
                json!({"ID": "a", "Name": "a", "Status": "exited(1), running(2)", "ConfigFiles": "/r/compose.yml,/r/override.yml", "Reason": ""}),
                json!({"ID": "b", "Name": "b", "Status": "running(1)", "ConfigFiles": "/r/compose.yml", "Reason": ""}),
            ]
        );
    }

    #[test]
    fn a_container_summary_has_compose_fields() {
        let mut c = container("p", "exited", "");
        c.status = "Exited (137) 2 seconds ago".into();
        c.names = vec!["p-web-1".into()];
        c.labels.insert(SERVICE.into(), "web".into());
        c.ports = vec![("0.0.0.0".into(), 80, Some(8080), "tcp".into())];
        let s = summary(&c);
        assert_eq!(s["Name"], "p-web-1");
        assert_eq!(s["Project"], "p");
        assert_eq!(s["Service"], "web");
        assert_eq!(s["ExitCode"], 137);
        assert_eq!(
            s["Publishers"],
            json!([{"URL": "0.0.0.0", "TargetPort": 80, "PublishedPort": 8080, "Protocol": "tcp"}])
        );
    }
}
