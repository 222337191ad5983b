//! Issue 10's rule, as a test: every deploy-config key and every variable of `doco-cd config env`
//! either has its documented effect, shown by a named behaviour test, or is refused with an error
//! naming it, shown by a named test of the refusal. Nothing is accepted and silently ignored.
//!
//! The keys are not listed by hand: the deploy-config keys come from the type itself (every field
//! `DeployConfig::default()` serializes, nested sections included) together with the documented
//! `doco_config::keys::DEPLOY_KEYS`, and the variables from the running binary's `config env`
//! plus `UNSUPPORTED_VARIABLES` and the Docker variables doco-cd reads. Adding a key or a variable
//! without a line in [`COVERAGE`] fails this test, and so does naming a test that does not exist.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// How the rule is met for one key or variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// The behaviour test (a function name somewhere in the workspace) that shows its effect.
    Test(&'static str),
    /// The test that shows it is refused with an error naming it.
    Refused(&'static str),
}

use Coverage::{Refused, Test};

/// Deploy-config fields the type serializes that are not user keys.
const INTERNAL_FIELDS: &[&str] = &["compose_files_customized"];

const COVERAGE: &[(&str, Coverage)] = &[
    // ---- deploy config ----
    (
        "name",
        Test("a_moved_tag_redeploys_only_its_service_with_force_image_pull"),
    ),
    (
        "source",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    (
        "version",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    (
        "reference",
        Test("a_deployment_with_its_own_reference_deploys_that_branch"),
    ),
    (
        "repository_url",
        Test(
            "repository_url_deploys_from_the_other_repository_and_its_outage_never_blocks_local_healing",
        ),
    ),
    (
        "webhook_filter",
        Test("a_webhook_is_skipped_only_when_its_reference_does_not_match_the_filter"),
    ),
    (
        "context",
        Test("a_deployment_with_a_docker_context_is_deployed_and_healed_on_that_contexts_engine"),
    ),
    (
        "working_dir",
        Test(
            "a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect",
        ),
    ),
    (
        "compose_files",
        Test("a_moved_tag_redeploys_only_its_service_with_force_image_pull"),
    ),
    (
        "environment",
        Test(
            "a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect",
        ),
    ),
    (
        "env_files",
        Test(
            "a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect",
        ),
    ),
    (
        "profiles",
        Test(
            "a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect",
        ),
    ),
    (
        "remove_orphans",
        Test(
            "a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect",
        ),
    ),
    (
        "prune_images",
        Test("prune_images_removes_what_no_container_uses_and_keeps_a_shared_image"),
    ),
    (
        "wait_running_jobs",
        Test("wait_running_jobs_holds_a_deploy_until_the_stacks_running_job_finished"),
    ),
    (
        "force_recreate",
        Test("force_recreate_is_honoured_online_and_ignored_offline"),
    ),
    (
        "force_image_pull",
        Test("a_moved_tag_redeploys_only_its_service_with_force_image_pull"),
    ),
    (
        "timeout",
        Test("a_health_check_that_never_passes_fails_the_deploy_naming_the_service_and_its_output"),
    ),
    (
        "git_depth",
        Test(
            "a_deployments_own_reference_depth_directory_variables_profiles_and_orphans_take_effect",
        ),
    ),
    (
        "build",
        Test(
            "build_args_reach_the_image_a_changed_context_rebuilds_only_its_service_and_a_failed_build_changes_nothing",
        ),
    ),
    (
        "build.args",
        Test(
            "build_args_reach_the_image_a_changed_context_rebuilds_only_its_service_and_a_failed_build_changes_nothing",
        ),
    ),
    (
        "build.no_cache",
        Test(
            "build_args_reach_the_image_a_changed_context_rebuilds_only_its_service_and_a_failed_build_changes_nothing",
        ),
    ),
    (
        "build.quiet",
        Test("build_options_become_flags_and_build_arg_values_stay_off_the_command_line"),
    ),
    (
        "build.force_image_pull",
        Test("build_options_become_flags_and_build_arg_values_stay_off_the_command_line"),
    ),
    ("destroy", Test("destroy_removes_the_stack_it_deployed")),
    (
        "destroy.enabled",
        Test("destroy_removes_the_stack_it_deployed"),
    ),
    (
        "destroy.remove_images",
        Test("destroy_removes_the_stack_it_deployed"),
    ),
    (
        "destroy.remove_volumes",
        Test("destroy_remove_volumes_removes_the_stacks_named_volumes_and_false_keeps_them"),
    ),
    (
        "destroy.remove_dir",
        Test("destroy_removes_the_stack_it_deployed"),
    ),
    (
        "auto_discovery",
        Test("auto_discovery_deploys_each_directory_and_delete_removes_a_vanished_one"),
    ),
    (
        "auto_discovery.enabled",
        Test("auto_discovery_deploys_each_directory_and_delete_removes_a_vanished_one"),
    ),
    (
        "auto_discovery.delete",
        Test("auto_discovery_deploys_each_directory_and_delete_removes_a_vanished_one"),
    ),
    (
        "auto_discovery.remove_images",
        Test("auto_discovery_deploys_each_directory_and_delete_removes_a_vanished_one"),
    ),
    ("auto_discovery.depth", Test("depth_table")),
    (
        "auto_discovery.remove_volumes",
        Test("auto_discovery_remove_volumes_removes_a_vanished_stacks_volumes"),
    ),
    (
        "reconciliation",
        Test("a_subscribed_die_event_starts_the_container_without_a_poll"),
    ),
    (
        "reconciliation.events",
        Test("a_subscribed_die_event_starts_the_container_without_a_poll"),
    ),
    (
        "reconciliation.enabled",
        Test("reconciliation_enabled_false_leaves_a_stopped_container_alone"),
    ),
    (
        "reconciliation.restart_timeout",
        Test(
            "an_unhealthy_container_is_restarted_with_the_restart_signal_and_killed_after_the_restart_timeout",
        ),
    ),
    (
        "reconciliation.restart_signal",
        Test(
            "an_unhealthy_container_is_restarted_with_the_restart_signal_and_killed_after_the_restart_timeout",
        ),
    ),
    (
        "reconciliation.restart_limit",
        Test("unhealthy_restarts_stop_at_the_limit_until_the_window_slides"),
    ),
    (
        "reconciliation.restart_window",
        Test("unhealthy_restarts_stop_at_the_limit_until_the_window_slides"),
    ),
    (
        "swarm",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    (
        "swarm.config_retention",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    (
        "swarm.secret_retention",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    (
        "external_secrets",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    (
        "oci",
        Refused("unsupported_deploy_keys_fail_their_deployment_naming_the_key_and_deploy_nothing"),
    ),
    // ---- variables of `doco-cd config env` ----
    ("LOG_LEVEL", Refused("env_bad_value_names_the_variable")),
    (
        "DOCO_CD_LOG_FORMAT",
        Test("json_logs_name_the_webhook_client_from_the_trusted_proxy_header_only"),
    ),
    (
        "HTTP_PORT",
        Test("tls_on_the_http_ports_and_the_healthcheck_command_speaks_it"),
    ),
    (
        "METRICS_PORT",
        Test("tls_on_the_http_ports_and_the_healthcheck_command_speaks_it"),
    ),
    (
        "HTTP_TLS_CERT_FILE",
        Test("tls_on_the_http_ports_and_the_healthcheck_command_speaks_it"),
    ),
    (
        "HTTP_TLS_KEY_FILE",
        Test("tls_on_the_http_ports_and_the_healthcheck_command_speaks_it"),
    ),
    ("HTTP_PROXY", Test("maps_the_git_settings")),
    (
        "TRUSTED_PROXY_NETWORKS",
        Test("json_logs_name_the_webhook_client_from_the_trusted_proxy_header_only"),
    ),
    (
        "TRUSTED_PROXY_HEADER",
        Test("json_logs_name_the_webhook_client_from_the_trusted_proxy_header_only"),
    ),
    (
        "API_SECRET",
        Test("the_rest_api_deploys_lists_stops_starts_reports_and_removes_a_stack"),
    ),
    (
        "WEBHOOK_SECRET",
        Test("a_signed_webhook_deploys_the_pushed_commit_and_a_bad_signature_deploys_nothing"),
    ),
    (
        "MAX_PAYLOAD_SIZE",
        Test("body_over_max_payload_size_is_413"),
    ),
    (
        "MAX_CONCURRENT_DEPLOYMENTS",
        Test("max_concurrent_deployments_bounds_the_active_deployments"),
    ),
    (
        "MAX_DEPLOYMENT_LOOP_COUNT",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "SCHEDULER_ENABLED",
        Test("scheduler_enabled_false_runs_no_due_job_and_true_runs_it"),
    ),
    ("PASS_ENV", Test("pass_env_keeps_doco_cds_own_secrets_out")),
    (
        "DEPLOY_CONFIG_BASE_DIR",
        Test("check_honours_target_and_base_dir"),
    ),
    (
        "DATA_MOUNT_PATH",
        Test("a_restart_while_git_is_unreachable_enforces_from_the_state_file"),
    ),
    (
        "DATA_HOST_PATH",
        Test("data_host_path_is_the_bind_source_and_a_loud_deploy_logs_compose_output"),
    ),
    (
        "POLL_CONFIG",
        Test(
            "deploys_then_leaves_quiet_polls_alone_redeploys_only_what_changed_heals_and_rolls_back",
        ),
    ),
    (
        "SOURCE_URL_REWRITES",
        Test("local_clone_url_is_403_unless_a_rewrite_produced_it"),
    ),
    (
        "GIT_ACCESS_TOKEN",
        Test("file_variables_with_encrypted_content_are_decrypted"),
    ),
    ("GIT_ACCESS_TOKEN_USER", Test("maps_the_git_settings")),
    ("GIT_CLONE_DEPTH", Test("maps_the_git_settings")),
    ("GIT_CLONE_SUBMODULES", Test("maps_the_git_settings")),
    (
        "SSH_PRIVATE_KEY",
        Test("ssh_url_is_used_when_an_ssh_key_is_configured_and_no_rewrite_applied"),
    ),
    ("SSH_PRIVATE_KEY_PASSPHRASE", Test("key_with_a_passphrase")),
    ("SKIP_TLS_VERIFICATION", Test("maps_the_git_settings")),
    (
        "GIT_COMMIT_STATUS",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "DOCKER_QUIET_DEPLOY",
        Test("data_host_path_is_the_bind_source_and_a_loud_deploy_logs_compose_output"),
    ),
    (
        "DOCKER_SWARM_FEATURES",
        Refused("on_a_swarm_manager_doco_cd_refuses_to_start_unless_swarm_features_are_off"),
    ),
    (
        "DOCKER_SWARM_CONFIG_RETENTION",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "DOCKER_SWARM_SECRET_RETENTION",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "ARTIFACT_GC_ENABLED",
        Test("artifact_gc_keeps_what_is_used_and_the_newest_and_removes_the_rest"),
    ),
    (
        "ARTIFACT_GC_INTERVAL",
        Test("artifact_gc_keeps_what_is_used_and_the_newest_and_removes_the_rest"),
    ),
    (
        "ARTIFACT_GC_RETENTION_RECORDS",
        Test("artifact_gc_keeps_what_is_used_and_the_newest_and_removes_the_rest"),
    ),
    (
        "ARTIFACT_GC_RETENTION_TTL",
        Test("artifact_gc_keeps_what_is_used_and_the_newest_and_removes_the_rest"),
    ),
    ("APPRISE_API_URL", Test("start")),
    ("APPRISE_NOTIFY_URLS", Test("start")),
    ("APPRISE_NOTIFY_LEVEL", Test("start")),
    (
        "APPRISE_NOTIFY_REPEAT_INTERVAL",
        Test("apprise_notify_repeat_interval_repeats_an_unchanged_failure_after_it"),
    ),
    (
        "DOCO_CD_MAINTAIN_OFFLINE_STATE",
        Test("a_restart_while_git_is_unreachable_enforces_from_the_state_file"),
    ),
    ("DOCO_CD_MIN_POLL_INTERVAL", Test("poll_intervals")),
    // ---- unsupported upstream variables (doco_config::env::UNSUPPORTED_VARIABLES) ----
    (
        "APPRISE_NOTIFY_BODY_TEMPLATE",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "APPRISE_NOTIFY_BODY_TEMPLATE_FILE",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "GIT_SCM_PROVIDER",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "GIT_SCM_API_URL",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "OCI_INSECURE_REGISTRIES",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "OCI_VERIFY_MAX_WORKERS",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "OCI_TRUST_POLICY",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "OCI_TRUST_POLICY_FILE",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "CERT_ROTATION_ENABLED",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "CERT_ROTATION_THRESHOLD",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "CERT_ROTATION_CHECK_INTERVAL",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    (
        "SECRET_PROVIDER",
        Refused("unsupported_variables_stop_start_up_naming_them_and_deploy_nothing"),
    ),
    // ---- Docker variables (doco_docker::Endpoint, registry_auth) ----
    (
        "DOCKER_HOST",
        Test("deploys_and_heals_over_tls_with_a_client_certificate"),
    ),
    (
        "DOCKER_TLS_VERIFY",
        Test("deploys_and_heals_over_tls_with_a_client_certificate"),
    ),
    (
        "DOCKER_CERT_PATH",
        Refused("refuses_to_start_when_a_tls_file_is_missing"),
    ),
    (
        "DOCKER_CONTEXT",
        Test("compose_gets_the_resolved_host_never_the_context_name"),
    ),
    (
        "DOCKER_CONFIG",
        Test("pulls_a_private_image_with_credentials_from_config_json"),
    ),
    (
        "DOCKER_AUTH_CONFIG",
        Test("pulls_a_private_image_with_credentials_from_docker_auth_config"),
    ),
];

/// The Docker variables doco-cd reads besides those of `config env`.
const DOCKER_VARIABLES: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_AUTH_CONFIG",
];

/// Every deploy-config key, from the type (top-level fields and the fields of nested sections,
/// as `section.field`) and from the documented key list.
fn deploy_keys() -> BTreeSet<String> {
    let value = serde_json::to_value(doco_config::DeployConfig::default()).unwrap();
    let mut keys = BTreeSet::new();
    for (key, value) in value.as_object().unwrap() {
        if INTERNAL_FIELDS.contains(&key.as_str()) {
            continue;
        }
        keys.insert(key.clone());
        if let Some(section) = value.as_object().filter(|_| key != "oci") {
            keys.extend(section.keys().map(|field| format!("{key}.{field}")));
        }
    }
    keys.extend(doco_config::keys::DEPLOY_KEYS.iter().map(|k| k.to_string()));
    keys
}

/// Every variable `doco-cd config env` prints, the unsupported ones, and the Docker ones.
fn variables() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_doco-cd"))
        .args(["config", "env", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("POLL_CONFIG", "- url: https://example.com/repo.git\n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "config env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: BTreeSet<String> = printed.as_object().unwrap().keys().cloned().collect();
    names.extend(
        doco_config::env::UNSUPPORTED_VARIABLES
            .iter()
            .map(|v| v.to_string()),
    );
    names.extend(DOCKER_VARIABLES.iter().map(|v| v.to_string()));
    names
}

/// The names of every function defined in the workspace's Rust sources.
fn functions() -> BTreeSet<String> {
    let crates = doco_testkit::workspace_root().join("crates");
    let mut names = BTreeSet::new();
    collect_functions(&crates, &mut names);
    names
}

fn collect_functions(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_functions(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for rest in text.split("fn ").skip(1) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
}

#[test]
fn every_deploy_key_and_variable_is_covered_or_refused() {
    let keys: BTreeSet<String> = deploy_keys().into_iter().chain(variables()).collect();
    let listed: BTreeSet<String> = COVERAGE.iter().map(|(k, _)| k.to_string()).collect();
    let missing: Vec<&String> = keys.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "keys or variables with neither a behaviour test nor a refusal (add them to COVERAGE): {missing:?}"
    );
    let stale: Vec<&String> = listed.difference(&keys).collect();
    assert!(
        stale.is_empty(),
        "COVERAGE names what no longer exists: {stale:?}"
    );
    assert_eq!(listed.len(), COVERAGE.len(), "COVERAGE lists a key twice");

    let functions = functions();
    for (key, coverage) in COVERAGE {
        let (Test(name) | Refused(name)) = coverage;
        assert!(
            functions.contains(*name),
            "{key}: the test `{name}` does not exist in the workspace"
        );
    }
}
