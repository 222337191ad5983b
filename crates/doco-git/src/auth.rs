//! Which credentials a remote gets: the global ones, or those of a `GIT_AUTH_DOMAINS` entry.
//!
//! Upstream's rules: an exact domain beats any wildcard, among wildcards (`*.example.com`, which
//! matches subdomains at any depth but not the apex) the longest suffix wins, and without a match
//! the global credentials apply. One deliberate tightening: an entry that names an HTTP method (a
//! token or a GitHub App) owns HTTP authentication for its domains, so a global token is never
//! sent to a domain configured for a GitHub App (methods are not mixed). A field the entry leaves
//! empty (its SSH key, its token user) falls back to the global value.

use std::fmt;

use crate::HttpToken;

/// An SSH private key (OpenSSH or PEM text) and its passphrase, if any.
#[derive(Clone, PartialEq, Eq)]
pub struct SshKey {
    pub private_key: String,
    pub passphrase: Option<String>,
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKey")
            .field("private_key", &"***")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A GitHub App that mints installation tokens (upstream's `GITHUB_APP_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct GitHubApp {
    /// The App ID (or client ID), the JWT's issuer.
    pub app_id: String,
    /// The App's RSA private key, PEM (PKCS#1 as GitHub issues it, or PKCS#8).
    pub private_key: String,
    /// A pinned installation; `None` looks it up per repository (`GET /repos/{owner}/{repo}/installation`).
    pub installation_id: Option<u64>,
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app_id", &self.app_id)
            .field("private_key", &"***")
            .field("installation_id", &self.installation_id)
            .finish()
    }
}

/// One `GIT_AUTH_DOMAINS` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainAuth {
    /// Exact hosts (`git.example.com`) or wildcards (`*.example.com`).
    pub domains: Vec<String>,
    /// A token; its `user` may be empty to inherit the global user.
    pub http_token: Option<HttpToken>,
    pub ssh_key: Option<SshKey>,
    pub github_app: Option<GitHubApp>,
}

/// The HTTP credentials chosen for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpAuth {
    None,
    Token(HttpToken),
    App(GitHubApp, String),
}

/// What a host gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub http: HttpAuth,
    pub ssh_key: Option<SshKey>,
}

/// The global credentials plus the domain entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthConfig<'a> {
    pub token: Option<&'a HttpToken>,
    pub github_app: Option<&'a GitHubApp>,
    pub ssh_key: Option<&'a SshKey>,
    pub domains: &'a [DomainAuth],
}

fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The entry that applies to `host` (lower case), if any.
pub(crate) fn entry_for<'a>(domains: &'a [DomainAuth], host: &str) -> Option<&'a DomainAuth> {
    let host = normalize(host);
    if let Some(exact) = domains
        .iter()
        .find(|e| e.domains.iter().any(|d| normalize(d) == host))
    {
        return Some(exact);
    }
    let mut best: Option<(&DomainAuth, usize)> = None;
    for entry in domains {
        for domain in &entry.domains {
            let domain = normalize(domain);
            let Some(suffix) = domain.strip_prefix("*.").filter(|s| !s.is_empty()) else {
                continue;
            };
            let matches = host != suffix && host.ends_with(&format!(".{suffix}"));
            if matches && best.is_none_or(|(_, len)| suffix.len() > len) {
                best = Some((entry, suffix.len()));
            }
        }
    }
    best.map(|(e, _)| e)
}

impl AuthConfig<'_> {
    /// The credentials for `host` (`None`: a local repository, global credentials only).
    pub fn resolve(&self, host: Option<&str>) -> Resolved {
        let global_user = self
            .token
            .map(|t| t.user.clone())
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "oauth2".to_string());
        let global_http = match (self.token, self.github_app) {
            (Some(t), _) => HttpAuth::Token(t.clone()),
            (None, Some(app)) => HttpAuth::App(app.clone(), global_user.clone()),
            (None, None) => HttpAuth::None,
        };
        let global = Resolved {
            http: global_http,
            ssh_key: self.ssh_key.cloned(),
        };
        let Some(entry) = host.and_then(|h| entry_for(self.domains, h)) else {
            return global;
        };
        let user_of = |t: &HttpToken| {
            if t.user.trim().is_empty() {
                global_user.clone()
            } else {
                t.user.clone()
            }
        };
        let http = match (&entry.http_token, &entry.github_app) {
            (Some(t), _) if !t.token.is_empty() => HttpAuth::Token(HttpToken {
                user: user_of(t),
                token: t.token.clone(),
            }),
            (_, Some(app)) => HttpAuth::App(
                app.clone(),
                entry
                    .http_token
                    .as_ref()
                    .map_or_else(|| global_user.clone(), user_of),
            ),
            // An entry with only a token user keeps the global token under that user.
            (Some(t), None) => match global.http {
                HttpAuth::Token(g) => HttpAuth::Token(HttpToken {
                    user: user_of(t),
                    token: g.token,
                }),
                other => other,
            },
            (None, None) => global.http,
        };
        Resolved {
            http,
            ssh_key: entry.ssh_key.clone().or(global.ssh_key),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(user: &str, t: &str) -> HttpToken {
        HttpToken {
            user: user.into(),
            token: t.into(),
        }
    }

    fn app(id: &str) -> GitHubApp {
        GitHubApp {
            app_id: id.into(),
            private_key: "k".into(),
            installation_id: None,
        }
    }

    fn key(k: &str) -> SshKey {
        SshKey {
            private_key: k.into(),
            passphrase: None,
        }
    }

    #[test]
    fn exact_beats_wildcard_and_longest_suffix_wins() {
        let domains = vec![
            DomainAuth {
                domains: vec!["*.example.com".into()],
                http_token: Some(token("", "wild")),
                ..Default::default()
            },
            DomainAuth {
                domains: vec!["*.git.example.com".into()],
                http_token: Some(token("deep", "deeper")),
                ..Default::default()
            },
            DomainAuth {
                domains: vec!["Exact.Example.com.".into(), "other.org".into()],
                http_token: Some(token("", "exact")),
                ssh_key: Some(key("exact-key")),
                ..Default::default()
            },
            DomainAuth {
                domains: vec!["*.apps.io".into()],
                github_app: Some(app("7")),
                ..Default::default()
            },
        ];
        let global = token("glob-user", "global");
        let global_key = key("global-key");
        let cfg = AuthConfig {
            token: Some(&global),
            github_app: None,
            ssh_key: Some(&global_key),
            domains: &domains,
        };
        let http = |h: &str| cfg.resolve(Some(h)).http;
        assert_eq!(
            http("exact.example.com"),
            HttpAuth::Token(token("glob-user", "exact"))
        );
        assert_eq!(
            http("other.org"),
            HttpAuth::Token(token("glob-user", "exact"))
        );
        assert_eq!(
            http("a.example.com"),
            HttpAuth::Token(token("glob-user", "wild"))
        );
        assert_eq!(
            http("a.b.example.com"),
            HttpAuth::Token(token("glob-user", "wild"))
        );
        assert_eq!(
            http("x.git.example.com"),
            HttpAuth::Token(token("deep", "deeper"))
        );
        // A wildcard does not match its apex; unmatched hosts fall back to the global token.
        assert_eq!(http("example.com"), HttpAuth::Token(global.clone()));
        assert_eq!(http("github.com"), HttpAuth::Token(global.clone()));
        assert_eq!(cfg.resolve(None).http, HttpAuth::Token(global.clone()));
        // An App entry never receives the global token (methods are not mixed).
        assert_eq!(
            http("x.apps.io"),
            HttpAuth::App(app("7"), "glob-user".into())
        );
        // SSH keys: the entry's, else the global one.
        assert_eq!(
            cfg.resolve(Some("exact.example.com")).ssh_key,
            Some(key("exact-key"))
        );
        assert_eq!(
            cfg.resolve(Some("a.example.com")).ssh_key,
            Some(global_key.clone())
        );
    }

    #[test]
    fn global_app_and_nothing() {
        let a = app("1");
        let cfg = AuthConfig {
            github_app: Some(&a),
            ..Default::default()
        };
        assert_eq!(
            cfg.resolve(Some("github.com")).http,
            HttpAuth::App(a, "oauth2".into())
        );
        let none = AuthConfig::default();
        assert_eq!(none.resolve(Some("h")).http, HttpAuth::None);
        assert_eq!(none.resolve(Some("h")).ssh_key, None);
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!(
            "{:?} {:?}",
            SshKey {
                private_key: "PRIV".into(),
                passphrase: Some("PASS".into())
            },
            GitHubApp {
                app_id: "1".into(),
                private_key: "PRIV".into(),
                installation_id: Some(2)
            }
        );
        assert!(!text.contains("PRIV") && !text.contains("PASS"), "{text}");
    }
}
