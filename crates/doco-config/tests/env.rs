//! Environment-variable parsing: defaults, each validation error, `_FILE` variants, booleans and
//! the poll interval spellings.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use doco_config::{AppConfig, ConfigError, LogFormat, LogLevel, Secret};

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<AppConfig, ConfigError> {
    AppConfig::from_env(&vars(pairs))
}

fn load_err(pairs: &[(&str, &str)]) -> String {
    match load(pairs) {
        Ok(config) => panic!("expected an error for {pairs:?}, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let c = load(&[]).unwrap();
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.http_port, 80);
    assert_eq!(c.metrics_port, 9120);
    assert!(c.poll_configs.is_empty());
    assert_eq!(c.data_mount_path, PathBuf::from("/data"));
    assert_eq!(c.data_host_path, None);
    assert!(c.git_access_token.is_none());
    assert_eq!(c.git_access_token_user, "oauth2");
    assert!(!c.maintain_offline_state);
    assert_eq!(c.max_concurrent_deployments, 4);
    assert_eq!(c.deploy_config_base_dir, "/");
    assert!(c.docker_quiet_deploy);
    assert_eq!(c.min_poll_interval, Duration::from_secs(10));
    assert!(c.unsupported.is_empty());
    assert!(c.warnings.is_empty());
    assert!(c.api_secret.is_none() && c.webhook_secret.is_none());
    assert_eq!(c.max_payload_size, 1_048_576);
    assert_eq!(c.trusted_proxy_header, "X-Forwarded-For");
    assert_eq!(c.trusted_proxy_networks.len(), 5);
    assert_eq!(c.git_clone_depth, 0);
    assert!(c.git_clone_submodules);
    assert!(c.scheduler_enabled);
    assert!(!c.pass_env);
    assert!(c.docker_swarm_features);
    assert_eq!(c.apprise_notify_level, "success");
    assert_eq!(c.apprise_notify_repeat_interval, Duration::from_secs(3600));
    assert!(c.http_tls_cert_file.is_none());
}

#[test]
fn valid_values() {
    let c = load(&[
        ("LOG_LEVEL", "DEBUG"),
        ("DOCO_CD_LOG_FORMAT", "json"),
        ("HTTP_PORT", "8080"),
        ("METRICS_PORT", "9000"),
        ("DATA_MOUNT_PATH", "/srv/data"),
        ("DATA_HOST_PATH", "/var/lib/doco"),
        ("GIT_ACCESS_TOKEN", "tok"),
        ("GIT_ACCESS_TOKEN_USER", "deploy"),
        ("MAX_CONCURRENT_DEPLOYMENTS", "1"),
        ("DEPLOY_CONFIG_BASE_DIR", "configs"),
        ("DOCKER_QUIET_DEPLOY", "false"),
        ("DOCO_CD_MIN_POLL_INTERVAL", "1s"),
        ("HTTP_TLS_CERT_FILE", "/c.pem"),
        ("HTTP_TLS_KEY_FILE", "/k.pem"),
        ("DOCKER_SWARM_CONFIG_RETENTION", "-1"),
        ("TRUSTED_PROXY_NETWORKS", "10.1.2.3/8, fd00::/8"),
        ("SOURCE_URL_REWRITES", "GitHub.com: https://mirror.local/"),
    ])
    .unwrap();
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!((c.http_port, c.metrics_port), (8080, 9000));
    assert_eq!(c.data_mount_path, PathBuf::from("/srv/data"));
    assert_eq!(c.data_host_path, Some(PathBuf::from("/var/lib/doco")));
    assert_eq!(c.git_access_token.as_ref().map(Secret::expose), Some("tok"));
    assert_eq!(c.git_access_token_user, "deploy");
    assert_eq!(c.max_concurrent_deployments, 1);
    assert_eq!(c.deploy_config_base_dir, "configs");
    assert!(!c.docker_quiet_deploy);
    assert_eq!(c.min_poll_interval, Duration::from_secs(1));
    assert_eq!(c.http_tls_key_file, Some(PathBuf::from("/k.pem")));
    assert_eq!(c.docker_swarm_config_retention, -1);
    assert!(c.trusted_proxy_networks[0].contains("10.200.0.1".parse().unwrap()));
    assert!(!c.trusted_proxy_networks[0].contains("11.0.0.1".parse().unwrap()));
    assert!(c.trusted_proxy_networks[1].contains("fd12::1".parse().unwrap()));
    assert_eq!(
        c.source_url_rewrites.get("github.com").map(String::as_str),
        Some("https://mirror.local/")
    );
}

#[test]
fn validation_errors_name_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("HTTP_PORT", "abc")],
            r#"HTTP_PORT: invalid value "abc": expected a port number 1-65535"#,
        ),
        (&[("HTTP_PORT", "0")], "HTTP_PORT: invalid value \"0\""),
        (
            &[("HTTP_PORT", "70000")],
            "HTTP_PORT: invalid value \"70000\"",
        ),
        (&[("METRICS_PORT", "-1")], "METRICS_PORT: invalid value"),
        (
            &[("HTTP_PORT", "9120")],
            "HTTP_PORT and METRICS_PORT cannot be the same port number: 9120",
        ),
        (
            &[("LOG_LEVEL", "verbose")],
            "LOG_LEVEL: invalid value \"verbose\": expected one of debug, info, warn, error",
        ),
        (
            &[("DOCO_CD_LOG_FORMAT", "xml")],
            "DOCO_CD_LOG_FORMAT: invalid value \"xml\": expected text or json",
        ),
        (
            &[("DATA_MOUNT_PATH", "data")],
            "DATA_MOUNT_PATH: invalid value \"data\": must be an absolute path",
        ),
        (
            &[("DATA_HOST_PATH", "./x")],
            "DATA_HOST_PATH: invalid value \"./x\": must be an absolute path",
        ),
        (
            &[("MAX_CONCURRENT_DEPLOYMENTS", "0")],
            "MAX_CONCURRENT_DEPLOYMENTS: invalid value \"0\"",
        ),
        (
            &[("MAX_CONCURRENT_DEPLOYMENTS", "many")],
            "MAX_CONCURRENT_DEPLOYMENTS: invalid value \"many\"",
        ),
        (
            &[("DOCO_CD_MAINTAIN_OFFLINE_STATE", "maybe")],
            "DOCO_CD_MAINTAIN_OFFLINE_STATE: invalid value \"maybe\": expected a boolean",
        ),
        (
            &[("DOCKER_QUIET_DEPLOY", "2")],
            "DOCKER_QUIET_DEPLOY: invalid value \"2\"",
        ),
        (
            &[("HTTP_TLS_CERT_FILE", "/c.pem")],
            "HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE must be set together",
        ),
        (
            &[("HTTP_TLS_KEY_FILE", "/k.pem")],
            "HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE must be set together",
        ),
        (
            &[
                ("GIT_ACCESS_TOKEN", "a"),
                ("GITHUB_APP_ID", "1"),
                ("GITHUB_APP_PRIVATE_KEY", "k"),
            ],
            "GIT_ACCESS_TOKEN cannot be combined",
        ),
        (
            &[("TRUSTED_PROXY_NETWORKS", "10.0.0.1")],
            "TRUSTED_PROXY_NETWORKS: invalid value",
        ),
        (
            &[("DOCKER_SWARM_SECRET_RETENTION", "-2")],
            "DOCKER_SWARM_SECRET_RETENTION: invalid value \"-2\"",
        ),
        (
            &[("APPRISE_NOTIFY_LEVEL", "loud")],
            "APPRISE_NOTIFY_LEVEL: invalid value \"loud\"",
        ),
        (
            &[("APPRISE_NOTIFY_REPEAT_INTERVAL", "often")],
            "APPRISE_NOTIFY_REPEAT_INTERVAL: invalid value \"often\"",
        ),
        (
            &[("DOCO_CD_MIN_POLL_INTERVAL", "fast")],
            "DOCO_CD_MIN_POLL_INTERVAL: invalid value \"fast\"",
        ),
        (
            &[("POLL_CONFIG", "- url: a"), ("POLL_CONFIG_FILE", "/x")],
            "both POLL_CONFIG and POLL_CONFIG_FILE are set",
        ),
        (
            &[("GIT_ACCESS_TOKEN", "a"), ("GIT_ACCESS_TOKEN_FILE", "/x")],
            "both GIT_ACCESS_TOKEN and GIT_ACCESS_TOKEN_FILE are set",
        ),
        (
            &[("SOURCE_URL_REWRITES", "github.com: ''")],
            "SOURCE_URL_REWRITES: invalid value: rewrite key \"github.com\" must have a non-empty target",
        ),
    ];
    for (pairs, want) in cases {
        let got = load_err(pairs);
        assert!(got.contains(want), "{pairs:?}:\n got: {got}\nwant: {want}");
    }
}

#[test]
fn booleans_accept_common_spellings() {
    for (raw, want) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("yes", true),
        ("Yes", true),
        ("false", false),
        ("0", false),
        ("no", false),
        ("NO", false),
    ] {
        let c = load(&[
            ("DOCO_CD_MAINTAIN_OFFLINE_STATE", raw),
            ("DOCKER_QUIET_DEPLOY", raw),
        ])
        .unwrap();
        assert_eq!(c.maintain_offline_state, want, "{raw}");
        assert_eq!(c.docker_quiet_deploy, want, "{raw}");
    }
}

#[test]
fn empty_values_count_as_unset() {
    let c = load(&[
        ("HTTP_PORT", ""),
        ("GIT_ACCESS_TOKEN", ""),
        ("POLL_CONFIG", ""),
    ])
    .unwrap();
    assert_eq!(c.http_port, 80);
    assert!(c.git_access_token.is_none());
    assert!(c.poll_configs.is_empty());
}

#[test]
fn file_variants_are_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "  s3cret\n\n").unwrap();
    let path = secret.to_str().unwrap();
    for var in [
        "GIT_ACCESS_TOKEN",
        "API_SECRET",
        "WEBHOOK_SECRET",
        "SSH_PRIVATE_KEY",
        "SSH_PRIVATE_KEY_PASSPHRASE",
    ] {
        let file_var = format!("{var}_FILE");
        let c = load(&[(file_var.as_str(), path)]).unwrap();
        let value = match var {
            "GIT_ACCESS_TOKEN" => c.git_access_token,
            "API_SECRET" => c.api_secret,
            "WEBHOOK_SECRET" => c.webhook_secret,
            "SSH_PRIVATE_KEY" => c.ssh_private_key,
            _ => c.ssh_private_key_passphrase,
        };
        assert_eq!(value.as_ref().map(Secret::expose), Some("s3cret"), "{var}");

        let both = load_err(&[(var, "x"), (file_var.as_str(), path)]);
        assert!(
            both.contains(&format!("both {var} and {var}_FILE are set")),
            "{both}"
        );
    }
}

#[test]
fn file_variant_errors() {
    let missing = load_err(&[("WEBHOOK_SECRET_FILE", "/nonexistent/secret")]);
    assert!(
        missing.contains("WEBHOOK_SECRET_FILE: cannot read file \"/nonexistent/secret\""),
        "{missing}"
    );

    let dir = tempfile::tempdir().unwrap();
    let sops = dir.path().join("token.enc");
    std::fs::write(&sops, "ENC[AES256_GCM,data:abc]\nsops:\n  version: 3\n").unwrap();
    let err = load_err(&[("GIT_ACCESS_TOKEN_FILE", sops.to_str().unwrap())]);
    assert!(err.contains("SOPS-encrypted"), "{err}");
    assert!(
        err.contains("SOPS_AGE_KEY_FILE"),
        "says how to fix it: {err}"
    );
    assert!(!err.contains("AES256"), "the content must not leak: {err}");
}

#[test]
fn sops_encrypted_file_variants_take_the_decrypted_value() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token.enc");
    std::fs::write(&token, "ENC[AES256_GCM,data:abc]\nsops:\n  version: 3\n").unwrap();
    let plain = dir.path().join("secret.txt");
    std::fs::write(&plain, "  hook-secret mentions sops \n").unwrap();
    let v = vars(&[
        ("GIT_ACCESS_TOKEN_FILE", token.to_str().unwrap()),
        ("WEBHOOK_SECRET_FILE", plain.to_str().unwrap()),
    ]);
    // Only the encrypted file is handed to the binary for decryption.
    assert_eq!(
        doco_config::encrypted_value_files(&v),
        std::slice::from_ref(&token)
    );
    let decrypted = BTreeMap::from([(token.clone(), "  the-token\n".to_owned())]);
    let c = AppConfig::from_env_decrypted(&v, &decrypted).unwrap();
    assert_eq!(c.git_access_token.unwrap().expose(), "the-token");
    assert_eq!(
        c.webhook_secret.unwrap().expose(),
        "hook-secret mentions sops"
    );

    // X and X_FILE stay exclusive, decrypted or not: the file is not even listed.
    let both = vars(&[
        ("GIT_ACCESS_TOKEN", "direct"),
        ("GIT_ACCESS_TOKEN_FILE", token.to_str().unwrap()),
    ]);
    assert!(doco_config::encrypted_value_files(&both).is_empty());
    let err = AppConfig::from_env_decrypted(&both, &decrypted).unwrap_err();
    assert!(matches!(err, ConfigError::BothSet { .. }), "{err}");
}

#[test]
fn secrets_are_not_printed() {
    let c = load(&[
        ("GIT_ACCESS_TOKEN", "supersecret"),
        ("API_SECRET", "apikey"),
    ])
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("supersecret") && !debug.contains("apikey"),
        "{debug}"
    );
    assert_eq!(format!("{}", Secret::new("x")), "***");
    assert_eq!(format!("{:?}", Secret::new("x")), "***");
}

#[test]
fn unsupported_features_are_listed() {
    let c = load(&[
        ("APPRISE_API_URL", "http://apprise:8000/notify"),
        ("APPRISE_NOTIFY_BODY_TEMPLATE", "{{ .Message }}"),
        ("SECRET_PROVIDER", "openbao"),
        ("SECRET_PROVIDER_SITE_URL", "https://bao"),
        ("SOPS_AGE_KEY", "AGE-SECRET-KEY-1"),
        ("GIT_AUTH_DOMAINS", ""),
        ("HTTP_PORT", "80"),
        ("WEBHOOK_SECRET", "hook-secret"),
        // The REST API is built: its key is not "unsupported".
        ("API_SECRET", "api-key"),
    ])
    .unwrap();
    assert_eq!(
        c.unsupported,
        [
            "APPRISE_NOTIFY_BODY_TEMPLATE",
            "SECRET_PROVIDER",
            "SECRET_PROVIDER_SITE_URL",
        ]
    );
    assert!(c.sops_configured);
}

fn interval_of(yaml_interval: &str, min: Option<&str>) -> Result<Duration, String> {
    let poll = format!("- url: https://example.com/r.git\n  interval: {yaml_interval}\n");
    let mut pairs = vec![("POLL_CONFIG", poll.as_str())];
    if let Some(min) = min {
        pairs.push(("DOCO_CD_MIN_POLL_INTERVAL", min));
    }
    load(&pairs)
        .map(|c| c.poll_configs[0].interval)
        .map_err(|e| e.to_string())
}

#[test]
fn poll_intervals() {
    let cases: &[(&str, Option<&str>, Result<u64, &str>)] = &[
        ("90s", None, Ok(90)),
        ("5m", None, Ok(300)),
        ("1h30m", None, Ok(5400)),
        ("180", None, Ok(180)),
        ("\"180\"", None, Ok(180)),
        ("0", None, Ok(0)),
        ("\"0\"", None, Ok(0)),
        ("10", None, Ok(10)),
        ("60.0", None, Ok(60)),
        (
            "9",
            None,
            Err("POLL_CONFIG: entry 0: field `interval`: 9s is below the minimum of 10s"),
        ),
        ("5s", None, Err("below the minimum of 10s")),
        ("2", Some("1s"), Ok(2)),
        ("1.5", None, Err("must be a whole number of seconds")),
        ("1500ms", None, Err("must be a whole number of seconds")),
        ("90.5s", None, Err("must be a whole number of seconds")),
        ("-30", None, Err("must not be negative")),
        ("soon", None, Err("expected seconds")),
    ];
    for (raw, min, want) in cases {
        match (interval_of(raw, *min), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, Duration::from_secs(*want), "{raw}"),
            (Err(got), Err(want)) => {
                assert!(got.contains(want), "{raw}: {got}");
                assert!(got.starts_with("POLL_CONFIG: entry 0"), "{raw}: {got}");
            }
            (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
        }
    }
    // Default when absent.
    let c = load(&[("POLL_CONFIG", "- url: https://example.com/r.git")]).unwrap();
    assert_eq!(c.poll_configs[0].interval, Duration::from_secs(180));
}

#[test]
fn git_auth_settings() {
    let c = load(&[]).unwrap();
    assert!(c.git_auth_domains.is_empty());
    assert!(c.github_app.is_none());
    assert!(c.ssh_known_hosts.is_none());
    assert!(!c.ssh_accept_changed_host_keys);

    let yaml = "- domains: [github.com]\n  git_access_token: gh-token\n- domains: ['*.Example.com']\n  ssh_private_key: test-key\n  ssh_private_key_passphrase: pass\n  git_access_token_user: ''\n- domains: [ghe.corp]\n  github_app_id: '42'\n  github_app_private_key: PEM\n  github_app_installation_id: 7\n";
    let c = load(&[
        ("GIT_AUTH_DOMAINS", yaml),
        ("GITHUB_APP_ID", "9"),
        ("GITHUB_APP_PRIVATE_KEY", "KEY"),
        ("GITHUB_APP_INSTALLATION_ID", "123"),
        ("SSH_KNOWN_HOSTS", "h ssh-ed25519 AAAA"),
        ("SSH_ACCEPT_CHANGED_HOST_KEYS", "true"),
    ])
    .unwrap();
    assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
    let d = &c.git_auth_domains;
    assert_eq!(d.len(), 3);
    assert_eq!(d[0].domains, ["github.com"]);
    assert_eq!(
        d[0].git_access_token.as_ref().map(Secret::expose),
        Some("gh-token")
    );
    assert_eq!(d[1].domains, ["*.example.com"]);
    assert_eq!(
        d[1].ssh_private_key.as_ref().map(Secret::expose),
        Some("test-key")
    );
    assert_eq!(
        d[1].ssh_private_key_passphrase.as_ref().map(Secret::expose),
        Some("pass")
    );
    assert_eq!(d[1].git_access_token_user, None);
    let app = d[2].github_app.as_ref().unwrap();
    assert_eq!((app.app_id.as_str(), app.installation_id), ("42", 7));
    let global = c.github_app.as_ref().unwrap();
    assert_eq!(
        (
            global.app_id.as_str(),
            global.private_key.expose(),
            global.installation_id
        ),
        ("9", "KEY", 123)
    );
    assert_eq!(c.ssh_known_hosts.as_deref(), Some("h ssh-ed25519 AAAA"));
    assert!(c.ssh_accept_changed_host_keys);
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("gh-token") && !debug.contains("KEY") && !debug.contains("test-key"),
        "{debug}"
    );

    // The _FILE variants.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domains.yaml");
    std::fs::write(
        &file,
        "- domains: [gitlab.com]\n  git_access_token: gl-token\n",
    )
    .unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "gitlab.com ssh-ed25519 AAAA\n").unwrap();
    let c = load(&[
        ("GIT_AUTH_DOMAINS_FILE", file.to_str().unwrap()),
        ("SSH_KNOWN_HOSTS_FILE", known.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(
        c.git_auth_domains[0]
            .git_access_token
            .as_ref()
            .map(Secret::expose),
        Some("gl-token")
    );
    assert_eq!(
        c.ssh_known_hosts.as_deref(),
        Some("gitlab.com ssh-ed25519 AAAA")
    );

    // An incomplete global App is ignored, like upstream.
    assert!(
        load(&[("GITHUB_APP_ID", "1")])
            .unwrap()
            .github_app
            .is_none()
    );

    for (pairs, want) in [
        (
            vec![(
                "GIT_AUTH_DOMAINS",
                "- domains: [a.com]\n  github_app_id: '1'\n",
            )],
            "both github_app_id and github_app_private_key are required",
        ),
        (
            vec![(
                "GIT_AUTH_DOMAINS",
                "- domains: [a.com]\n  github_app_id: '1'\n  github_app_private_key: k\n  git_access_token: t\n",
            )],
            "cannot be combined with git_access_token or ssh_private_key",
        ),
        (
            vec![("GIT_AUTH_DOMAINS", "- git_access_token: secret-t\n")],
            "entry 0 has no domains",
        ),
        (
            vec![("GIT_AUTH_DOMAINS", "not: [a list")],
            "GIT_AUTH_DOMAINS",
        ),
        (
            vec![("GITHUB_APP_INSTALLATION_ID", "x")],
            "GITHUB_APP_INSTALLATION_ID: invalid value",
        ),
        (
            vec![("SSH_ACCEPT_CHANGED_HOST_KEYS", "maybe")],
            "SSH_ACCEPT_CHANGED_HOST_KEYS: invalid value",
        ),
        (
            vec![("GIT_AUTH_DOMAINS", "x"), ("GIT_AUTH_DOMAINS_FILE", "/x")],
            "both GIT_AUTH_DOMAINS and GIT_AUTH_DOMAINS_FILE are set",
        ),
    ] {
        let got = load_err(&pairs);
        assert!(got.contains(want), "{pairs:?}: {got}");
        assert!(!got.contains("secret-t"), "{got}");
    }
}
