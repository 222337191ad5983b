//! `doco-cd config check` and `doco-cd config env`, black-box: the built binary with a cleared
//! environment and only the variables under test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use doco_testkit::write_files;
use serde_json::Value;

const COMPOSE: &str = "services:\n  app:\n    image: doco-test/busybox:1\n";

fn doco(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doco-cd"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no deployment {name} in {list:?}"))
}

#[test]
fn check_json_with_auto_discovery_and_nested_override() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            (
                ".doco-cd.yml",
                "name: proxy\nworking_dir: infra\n---\n\
                 auto_discovery: {enabled: true, depth: 1}\nworking_dir: apps\n\
                 environment: {BASE: root}\nprofiles: [base]\nenviroment: {}\n",
            ),
            ("infra/compose.yaml", COMPOSE),
            ("apps/web/compose.yaml", COMPOSE),
            ("apps/web/.env", "A=1\n"),
            (
                "apps/web/.doco-cd.yml",
                "environment: {EXTRA: hello}\nprofiles: [web]\nremove_orphans: false\n\
                 destroy: {enabled: true}\nreconciliation: {events: [die]}\nreference: v9\n",
            ),
            ("apps/db/docker-compose.yml", COMPOSE),
            ("apps/db/deep/compose.yaml", COMPOSE),
            ("apps/notes/README.md", "no compose here\n"),
        ],
    );
    let dir = repo.path().to_str().unwrap();
    let out = doco(
        &[
            "config",
            "check",
            dir,
            "--format",
            "json",
            "--reference",
            "refs/heads/prod",
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["proxy", "db", "web"],
        "depth 1 leaves out apps/db/deep"
    );

    let proxy = by_name(&list, "proxy");
    assert_eq!(proxy["auto_discovered"], false);
    assert_eq!(proxy["working_dir"], "infra");
    assert_eq!(
        proxy["compose_files"],
        serde_json::json!(["infra/compose.yaml"])
    );

    let db = by_name(&list, "db");
    assert_eq!(db["auto_discovered"], true);
    assert_eq!(db["working_dir"], "apps/db");
    assert_eq!(
        db["compose_files"],
        serde_json::json!(["apps/db/docker-compose.yml"])
    );
    assert_eq!(db["environment"], serde_json::json!({"BASE": "root"}));
    assert_eq!(db["profiles"], serde_json::json!(["base"]));
    assert_eq!(db["reference"], "refs/heads/prod");
    assert_eq!(db["destroy"]["enabled"], false);
    assert_eq!(
        db["reconciliation"]["events"],
        serde_json::json!(["unhealthy"])
    );
    assert_eq!(db["auto_discovery"]["depth"], 1);

    let web = by_name(&list, "web");
    assert_eq!(web["auto_discovered"], true);
    assert_eq!(web["working_dir"], "apps/web");
    assert_eq!(
        web["environment"],
        serde_json::json!({"BASE": "root", "EXTRA": "hello"})
    );
    assert_eq!(web["profiles"], serde_json::json!(["web"]));
    assert_eq!(web["remove_orphans"], false, "explicit false honoured");
    assert_eq!(web["destroy"]["enabled"], true);
    assert_eq!(web["destroy"]["remove_volumes"], true);
    assert_eq!(web["reconciliation"]["events"], serde_json::json!(["die"]));
    assert_eq!(
        web["reference"], "refs/heads/prod",
        "reference is not overridable"
    );
    assert_eq!(web["env_files"], serde_json::json!(["apps/web/.env"]));

    assert!(
        stderr.contains("did you mean `environment`?"),
        "warnings go to stderr: {stderr}"
    );
    assert!(
        stderr.contains("field `reference` cannot be overridden"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("did you mean `environment`?").count(),
        1,
        "a template warning is printed once: {stderr}"
    );
}

#[test]
fn check_text_lists_each_deployment() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            (".doco-cd.yml", "auto_discovery: true\n"),
            ("a/compose.yaml", COMPOSE),
            ("b/compose.yaml", COMPOSE),
        ],
    );
    let out = doco(&["config", "check", repo.path().to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("deployment \"a\" (auto-discovered)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("deployment \"b\" (auto-discovered)"),
        "{stdout}"
    );
    assert!(stdout.contains("working_dir:     b"), "{stdout}");
    assert!(
        stdout.contains("2 deployment(s) resolved, 0 error(s)"),
        "{stdout}"
    );
}

#[test]
fn check_honours_target_and_base_dir() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            ("deploy/.doco-cd.nas.yaml", "name: nas\n"),
            ("deploy/.doco-cd.yml", "name: default\n"),
            ("compose.yaml", COMPOSE),
        ],
    );
    let dir = repo.path().to_str().unwrap();
    let out = doco(
        &[
            "config", "check", dir, "--target", "nas", "--format", "json",
        ],
        &[("DEPLOY_CONFIG_BASE_DIR", "deploy")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "nas");
    assert_eq!(list[0]["source_file"], "deploy/.doco-cd.nas.yaml");

    let missing = doco(&["config", "check", dir], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no deploy config"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn check_malformed_file_names_file_and_line() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            (
                ".doco-cd.yml",
                "name: a\ncompose_files: [compose.yaml\nprofiles: [x]\n",
            ),
            ("compose.yaml", COMPOSE),
        ],
    );
    let out = doco(&["config", "check", repo.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(".doco-cd.yml"), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");
    assert!(stderr.contains("column "), "{stderr}");
    assert!(stderr.contains("invalid YAML"), "{stderr}");
}

#[test]
fn check_invalid_field_names_document_field_line_and_column() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            (".doco-cd.yml", "name: ok\n---\nname: bad\ntimeout: soon\n"),
            ("compose.yaml", COMPOSE),
        ],
    );
    let out = doco(
        &[
            "config",
            "check",
            repo.path().to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(".doco-cd.yml document 2 (deployment \"bad\") line 4 column"),
        "{stderr}"
    );
    assert!(stderr.contains("field `timeout`"), "{stderr}");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1, "the valid deployment is still shown");
    assert_eq!(list[0]["name"], "ok");
}

#[test]
fn check_usage_errors_exit_2() {
    let out = doco(&["config", "check", "/definitely/not/here"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a directory"));
    let out = doco(&["config", "check", ".", "--format", "yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = doco(&["config", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn env_rejects_both_variable_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let out = doco(
        &["config", "env"],
        &[
            ("GIT_ACCESS_TOKEN", "from-env"),
            ("GIT_ACCESS_TOKEN_FILE", file.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("GIT_ACCESS_TOKEN") && stderr.contains("GIT_ACCESS_TOKEN_FILE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("from-env") && !stderr.contains("from-file"),
        "{stderr}"
    );
}

#[test]
fn env_prints_defaults_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "  webhook-secret-value \n").unwrap();
    let out = doco(
        &["config", "env"],
        &[
            ("GIT_ACCESS_TOKEN", "tok-123"),
            ("WEBHOOK_SECRET_FILE", file.to_str().unwrap()),
            ("HTTP_PORT", "8080"),
            (
                "POLL_CONFIG",
                "- url: https://user:pw@git.example.com/o/r.git\n  interval: 5m\n",
            ),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for line in [
        "HTTP_PORT=8080",
        "METRICS_PORT=9120",
        "LOG_LEVEL=info",
        "GIT_ACCESS_TOKEN=***",
        "WEBHOOK_SECRET=***",
        "API_SECRET=",
        "DATA_MOUNT_PATH=/data",
        "DOCO_CD_MAINTAIN_OFFLINE_STATE=false",
        "DOCO_CD_MIN_POLL_INTERVAL=10s",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line} missing in:\n{stdout}"
        );
    }
    assert!(stdout.contains("\"interval\":300"), "{stdout}");
    for secret in ["tok-123", "webhook-secret-value", "pw@"] {
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }

    let json = doco(
        &["config", "env", "--format", "json"],
        &[("LOG_LEVEL", "DEBUG")],
    );
    let map: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(map["LOG_LEVEL"], "debug");
}

#[test]
fn env_bad_value_names_the_variable() {
    for (var, value) in [
        ("HTTP_PORT", "eighty"),
        ("LOG_LEVEL", "loud"),
        ("SCHEDULER_ENABLED", "maybe"),
        ("POLL_CONFIG", "- url: https://h/r.git\n  interval: 5\n"),
    ] {
        let out = doco(&["config", "env"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(2), "{var}");
        assert!(
            text(&out.stderr).contains(var),
            "{var}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn help_lists_the_config_commands() {
    let out = doco(&["config", "--help"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("check") && stdout.contains("env"),
        "{stdout}"
    );
    let out = doco(&["config", "check", "--help"], &[]);
    let stdout = text(&out.stdout);
    for flag in [
        "--target",
        "--format",
        "--reference",
        "DEPLOY_CONFIG_BASE_DIR",
    ] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
}

#[test]
fn check_resolves_deployments_with_their_own_reference_against_the_given_directory() {
    let repo = tempfile::tempdir().unwrap();
    write_files(
        repo.path(),
        &[
            (
                ".doco-cd.yml",
                "name: pinned\nreference: v2\nworking_dir: /app\n---\n\
                 auto_discovery: true\nreference: refs/tags/v3\nworking_dir: stacks\n",
            ),
            ("app/compose.yaml", COMPOSE),
            ("stacks/a/compose.yaml", COMPOSE),
            ("stacks/b/compose.yaml", COMPOSE),
        ],
    );
    let dir = repo.path().to_str().unwrap();
    let out = doco(&["config", "check", dir, "--format", "json"], &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pinned", "a", "b"], "auto-discovery expanded");
    let pinned = by_name(&list, "pinned");
    assert_eq!(pinned["working_dir"], "app");
    assert_eq!(
        pinned["compose_files"],
        serde_json::json!(["app/compose.yaml"])
    );
    assert!(
        pinned["note"]
            .as_str()
            .unwrap()
            .contains("its own reference v2: files resolved against the given directory"),
        "{pinned}"
    );
    let b = by_name(&list, "b");
    assert_eq!(
        b["compose_files"],
        serde_json::json!(["stacks/b/compose.yaml"])
    );
    assert!(b["note"].as_str().unwrap().contains("refs/tags/v3"), "{b}");
    assert!(
        stderr.contains("working_dir \"/app\" is absolute: read as \"app\""),
        "{stderr}"
    );

    let out = doco(&["config", "check", dir], &[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "  note:            its own reference v2: files resolved against the given directory"
        ),
        "{stdout}"
    );
}
