//! `POLL_CONFIG` parsing: defaults, inline deployments, errors naming entry and field, warnings.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use doco_config::poll::MIN_POLL_INTERVAL;
use doco_config::{AppConfig, PollConfig, parse_poll_configs};

fn parse(text: &str) -> Result<doco_config::PollConfigs, String> {
    parse_poll_configs(text, "POLL_CONFIG", MIN_POLL_INTERVAL).map_err(|e| e.to_string())
}

#[test]
fn defaults_and_values() {
    let parsed = parse(
        "- url: https://git.example.com/a.git\n\
         - url: /srv/repos/b\n  reference: refs/tags/v1\n  interval: 5m\n  target: nas\n  run_once: yes\n  watch: false\n",
    )
    .unwrap();
    let [a, b] = &parsed.configs[..] else {
        panic!("{parsed:?}")
    };
    assert_eq!(a.url, "https://git.example.com/a.git");
    assert_eq!(a.reference, "refs/heads/main");
    assert_eq!(a.interval, Duration::from_secs(180));
    assert_eq!(a.target, "");
    assert!(!a.run_once);
    assert!(a.watch);
    assert!(a.deployments.is_empty());
    assert_eq!(a.source, "git");
    assert_eq!(
        b.url, "file:///srv/repos/b",
        "absolute paths become file:// URLs as upstream"
    );
    assert_eq!(b.reference, "refs/tags/v1");
    assert_eq!(b.interval, Duration::from_secs(300));
    assert_eq!(b.target, "nas");
    assert!(b.run_once);
    assert!(!b.watch);
    assert!(parsed.warnings.is_empty());
    assert_eq!(PollConfig::default().interval, Duration::from_secs(180));
}

#[test]
fn inline_deployments_are_parsed_and_validated() {
    let parsed = parse(
        "- url: https://git.example.com/a.git\n  deployments:\n    - name: web\n      compose_files: [web.yml]\n      destroy: true\n    - name: db\n      reconciliation: false\n",
    )
    .unwrap();
    let d = &parsed.configs[0].deployments;
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].name, "web");
    assert!(d[0].compose_files_customized);
    assert!(d[0].destroy.enabled && d[0].destroy.remove_volumes);
    assert!(!d[1].compose_files_customized);
    assert!(!d[1].reconciliation.enabled);
    assert_eq!(
        d[1].reference, None,
        "filled from the poll reference at resolution"
    );
}

#[test]
fn errors_name_origin_entry_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "- reference: main\n",
            "POLL_CONFIG: entry 0: field `url`: missing",
        ),
        (
            "- url: a\n- url: b\n  interval: 3\n",
            "POLL_CONFIG: entry 1: field `interval`: 3s is below the minimum of 10s",
        ),
        (
            "- url: a\n  run_once: perhaps\n",
            "POLL_CONFIG: entry 0: field `run_once`",
        ),
        (
            "- url: a\n  deployments:\n    - name: x\n    - timeout: 5\n",
            "POLL_CONFIG: entry 0: field `deployments[1].name`: missing",
        ),
        (
            "- url: a\n  deployments:\n    - name: x\n    - name: x\n",
            "POLL_CONFIG: entry 0: field `deployments[1].name`: duplicate deployment name \"x\"",
        ),
        (
            "- url: a\n  deployments:\n    - name: x\n      timeout: soon\n",
            "POLL_CONFIG: entry 0: field `deployments[0].timeout`",
        ),
        (
            "- url: a\n  deployments:\n    - name: x\n      working_dir: ../up\n",
            "field `deployments[0].working_dir`: \"../up\" escapes the repository",
        ),
        (
            "- url: a\n  source: oci\n",
            "POLL_CONFIG: entry 0: field `source`: `oci` sources are not supported",
        ),
        (
            "url: a\n",
            "POLL_CONFIG: expected a YAML list of poll entries",
        ),
        ("- url: [a\n", "POLL_CONFIG: invalid YAML at line"),
    ];
    for (text, want) in cases {
        let got = parse(text).expect_err(text);
        assert!(got.contains(want), "{text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn type_errors_carry_the_line() {
    let got = parse("- url: a\n- url: b\n  watch: sometimes\n").unwrap_err();
    assert!(
        got.contains("entry 1") && got.contains("field `watch`") && got.contains("line 3"),
        "{got}"
    );
}

#[test]
fn unknown_keys_warn_with_suggestions() {
    let parsed = parse(
        "- url: a\n  branch: main\n  intervall: 60\n  deployments:\n    - name: x\n      compose_file: [a.yml]\n      auto_discover: true\n      reconciliation:\n        event: [die]\n",
    )
    .unwrap();
    let w = parsed.warnings.join("\n");
    for want in [
        "POLL_CONFIG: entry 0: unknown key `branch` is ignored",
        "unknown key `intervall` is ignored: did you mean `interval`?",
        "unknown key `deployments[0].compose_file` is ignored: did you mean `deployments[0].compose_files`?",
        "`deployments[0].auto_discover` is a legacy key and is ignored: use `deployments[0].auto_discovery` instead",
        "unknown key `deployments[0].reconciliation.event` is ignored: did you mean `deployments[0].reconciliation.events`?",
    ] {
        assert!(w.contains(want), "missing {want:?} in:\n{w}");
    }
}

#[test]
fn poll_config_file_is_read_and_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("poll.yml");
    std::fs::write(&file, "- url: https://example.com/r.git\n  interval: 1h\n").unwrap();
    let vars: BTreeMap<String, String> =
        [("POLL_CONFIG_FILE".to_owned(), file.display().to_string())].into();
    let c = AppConfig::from_env(&vars).unwrap();
    assert_eq!(c.poll_configs[0].interval, Duration::from_secs(3600));

    std::fs::write(&file, "- url: https://example.com/r.git\n  interval: 1\n").unwrap();
    let err = AppConfig::from_env(&vars).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "POLL_CONFIG_FILE ({}): entry 0: field `interval`",
            file.display()
        )),
        "{err}"
    );

    let missing: BTreeMap<String, String> = [(
        "POLL_CONFIG_FILE".to_owned(),
        "/nonexistent/poll.yml".to_owned(),
    )]
    .into();
    let err = AppConfig::from_env(&missing).unwrap_err().to_string();
    assert!(err.contains("POLL_CONFIG_FILE: cannot read file"), "{err}");
}

#[test]
fn json_body_of_the_poll_api_parses_too() {
    let configs: Vec<PollConfig> =
        serde_json::from_str(r#"[{"url":"https://e.com/r.git","interval":"90s","deployments":[{"name":"a","destroy":{"enabled":true}}]}]"#)
            .unwrap();
    assert_eq!(configs[0].interval, Duration::from_secs(90));
    assert!(configs[0].deployments[0].destroy.enabled);
    assert!(configs[0].watch);
}
