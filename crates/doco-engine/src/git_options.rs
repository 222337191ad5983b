//! The Git client's settings, from the application config: credentials (global, per domain,
//! GitHub App, SSH), TLS and proxy, clone shape, and where SSH host keys are remembered (on the
//! data volume, so a restart does not forget them).

use std::time::Duration;

use doco_config::{AppConfig, GitHubAppConfig};
use doco_git::{DomainAuth, GitHubApp, GitOptions, HttpToken, SshKey};

use crate::paths::DataPaths;

fn app(config: &GitHubAppConfig) -> GitHubApp {
    GitHubApp {
        app_id: config.app_id.clone(),
        private_key: config.private_key.expose().to_string(),
        installation_id: (config.installation_id != 0).then_some(config.installation_id),
    }
}

/// [`GitOptions`] for `config`; SSH host keys go to `<DATA_MOUNT_PATH>/.doco-cd/ssh/known_hosts`.
pub fn git_options(config: &AppConfig, paths: &DataPaths) -> GitOptions {
    let user = config.git_access_token_user.clone();
    GitOptions {
        http_token: config.git_access_token.as_ref().map(|t| HttpToken {
            user: user.clone(),
            token: t.expose().to_string(),
        }),
        timeout: Duration::from_secs(120),
        github_app: config.github_app.as_ref().map(app),
        github_api_url: None,
        auth_domains: config
            .git_auth_domains
            .iter()
            .map(|d| DomainAuth {
                domains: d.domains.clone(),
                http_token: match (&d.git_access_token, &d.git_access_token_user) {
                    (Some(t), u) => Some(HttpToken {
                        user: u.clone().unwrap_or_default(),
                        token: t.expose().to_string(),
                    }),
                    // A user without a token: the global token under this user.
                    (None, Some(u)) => Some(HttpToken {
                        user: u.clone(),
                        token: String::new(),
                    }),
                    (None, None) => None,
                },
                ssh_key: d.ssh_private_key.as_ref().map(|k| SshKey {
                    private_key: k.expose().to_string(),
                    passphrase: d
                        .ssh_private_key_passphrase
                        .as_ref()
                        .map(|p| p.expose().to_string()),
                }),
                github_app: d.github_app.as_ref().map(app),
            })
            .collect(),
        ssh_key: config.ssh_private_key.as_ref().map(|k| SshKey {
            private_key: k.expose().to_string(),
            passphrase: config
                .ssh_private_key_passphrase
                .as_ref()
                .map(|p| p.expose().to_string()),
        }),
        ssh_dir: Some(paths.internal_dir().join("ssh")),
        ssh_known_hosts: config.ssh_known_hosts.clone(),
        ssh_accept_changed_host_keys: config.ssh_accept_changed_host_keys,
        skip_tls_verification: config.skip_tls_verification,
        http_proxy: config.http_proxy.clone(),
        depth: config.git_clone_depth,
        submodules: config.git_clone_submodules,
        ..GitOptions::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn maps_the_git_settings() {
        let vars: BTreeMap<String, String> = [
            ("GIT_ACCESS_TOKEN", "tok"),
            ("GIT_ACCESS_TOKEN_USER", "deploy"),
            ("GIT_CLONE_DEPTH", "3"),
            ("GIT_CLONE_SUBMODULES", "false"),
            ("SSH_PRIVATE_KEY", "KEY"),
            ("SSH_PRIVATE_KEY_PASSPHRASE", "PASS"),
            ("SKIP_TLS_VERIFICATION", "true"),
            ("HTTP_PROXY", "http://proxy:3128"),
            ("SSH_ACCEPT_CHANGED_HOST_KEYS", "true"),
            (
                "GIT_AUTH_DOMAINS",
                "- domains: [a.com]\n  git_access_token_user: u\n- domains: [b.com]\n  github_app_id: '5'\n  github_app_private_key: PEM\n",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = AppConfig::from_env(&vars).unwrap();
        let paths = DataPaths::new("/data".into(), None);
        let o = git_options(&config, &paths);
        assert_eq!(
            o.http_token,
            Some(HttpToken {
                user: "deploy".into(),
                token: "tok".into()
            })
        );
        assert_eq!((o.depth, o.submodules), (3, false));
        assert_eq!(
            o.ssh_key.as_ref().unwrap().passphrase.as_deref(),
            Some("PASS")
        );
        assert_eq!(
            o.ssh_dir.as_deref(),
            Some(std::path::Path::new("/data/.doco-cd/ssh"))
        );
        assert!(o.skip_tls_verification && o.ssh_accept_changed_host_keys);
        assert_eq!(o.http_proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(o.auth_domains.len(), 2);
        assert_eq!(o.auth_domains[0].http_token.as_ref().unwrap().user, "u");
        let app = o.auth_domains[1].github_app.as_ref().unwrap();
        assert_eq!((app.app_id.as_str(), app.installation_id), ("5", None));
    }
}
