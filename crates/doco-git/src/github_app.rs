//! GitHub App installation tokens: a JWT signed with the App's RSA key (RS256) buys a token for
//! one installation, valid for an hour; it is cached until shortly before it expires, so a quiet
//! poll costs no API call. The installation is pinned (`GITHUB_APP_INSTALLATION_ID`) or looked up
//! once per repository.
//!
//! The API base is `https://api.github.com` for github.com, `https://<host>/api/v3` for GitHub
//! Enterprise (upstream's rule), or whatever [`crate::GitOptions::github_api_url`] says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{rand, signature};
use base64::Engine as _;
use tokio::sync::Mutex;

use crate::{GitError, GitHubApp};

/// A cached token is renewed this long before it expires.
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    expires_at: SystemTime,
}

/// Mints and caches installation tokens; cheap to clone (shared cache).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSource {
    tokens: Arc<Mutex<HashMap<String, Cached>>>,
    installations: Arc<Mutex<HashMap<String, u64>>>,
    client: Arc<std::sync::OnceLock<reqwest::Client>>,
}

/// How to reach the API.
pub(crate) struct ApiOptions<'a> {
    pub api_url: Option<&'a str>,
    pub proxy: Option<&'a str>,
    pub skip_tls_verification: bool,
    pub timeout: Duration,
}

/// `https://api.github.com` for github.com, `https://api.<x>` kept, else `https://<host>/api/v3`.
pub(crate) fn api_base(host: &str) -> String {
    match host {
        "github.com" | "www.github.com" => "https://api.github.com".to_string(),
        h if h.starts_with("api.") => format!("https://{h}"),
        h => format!("https://{h}/api/v3"),
    }
}

/// The RS256 JWT GitHub expects from an App: issued 60 s in the past (clock skew), valid 9 min.
pub(crate) fn app_jwt(app: &GitHubApp, now: SystemTime) -> Result<String, String> {
    let key = parse_rsa_key(&app.private_key)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_string())?
        .as_secs();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iat": now.saturating_sub(60),
        "exp": now + 540,
        "iss": app.app_id.trim(),
    });
    let claims = b64.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the JWT failed".to_string())?;
    Ok(format!("{signing_input}.{}", b64.encode(sig)))
}

fn parse_rsa_key(pem: &str) -> Result<signature::RsaKeyPair, String> {
    let text = pem.trim();
    let (label, body) = pem_body(text).ok_or_else(|| {
        "the GitHub App private key is not PEM text (expected -----BEGIN RSA PRIVATE KEY-----)"
            .to_string()
    })?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the GitHub App private key's PEM body is not valid base64".to_string())?;
    let parsed = match label.as_str() {
        "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(&der).map_err(|e| e.to_string()),
        "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| e.to_string()),
        other => Err(format!("unexpected PEM block '{other}'")),
    };
    parsed.map_err(|e| format!("the GitHub App private key is not a usable RSA key: {e}"))
}

/// The label and base64 body of the first PEM block.
fn pem_body(text: &str) -> Option<(String, String)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker)?;
    let body: String = rest[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some((label, body))
}

impl TokenSource {
    fn client(&self, opts: &ApiOptions<'_>) -> Result<reqwest::Client, String> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent("doco-cd");
        if let Some(proxy) = opts.proxy {
            builder = builder.proxy(
                reqwest::Proxy::all(proxy)
                    .map_err(|_| "HTTP_PROXY is not a valid URL".to_string())?,
            );
        }
        if opts.skip_tls_verification {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(self.client.get_or_init(|| client).clone())
    }

    /// A valid installation token for `owner/repo` on `host`, from the cache when it has more than
    /// [`RENEW_BEFORE_EXPIRY`] left.
    pub async fn token(
        &self,
        app: &GitHubApp,
        host: &str,
        owner_repo: &str,
        display_url: &str,
        opts: &ApiOptions<'_>,
    ) -> Result<String, GitError> {
        let base = opts
            .api_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| api_base(host));
        let auth_err = |detail: String| GitError::Auth {
            url: display_url.to_string(),
            detail: format!("GitHub App {}: {detail}", app.app_id),
        };
        let installation = match app.installation_id {
            Some(id) => id,
            None => {
                let key = format!("{base}|{}|{owner_repo}", app.app_id);
                let known = self.installations.lock().await.get(&key).copied();
                match known {
                    Some(id) => id,
                    None => {
                        let id = self
                            .lookup_installation(app, &base, owner_repo, display_url, opts)
                            .await?;
                        self.installations.lock().await.insert(key, id);
                        id
                    }
                }
            }
        };
        let key = format!("{base}|{}|{installation}", app.app_id);
        let mut tokens = self.tokens.lock().await;
        if let Some(cached) = tokens.get(&key)
            && SystemTime::now() + RENEW_BEFORE_EXPIRY < cached.expires_at
        {
            return Ok(cached.token.clone());
        }
        let jwt = app_jwt(app, SystemTime::now()).map_err(auth_err)?;
        let url = format!("{base}/app/installations/{installation}/access_tokens");
        let body = self
            .request(reqwest::Method::POST, &url, &jwt, display_url, opts)
            .await?;
        let token = body
            .get("token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_err("the API returned no installation token".to_string()))?
            .to_string();
        let expires_at = body
            .get("expires_at")
            .and_then(|t| t.as_str())
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(60));
        tracing::debug!(app = %app.app_id, installation, "minted a GitHub App installation token");
        tokens.insert(
            key,
            Cached {
                token: token.clone(),
                expires_at,
            },
        );
        Ok(token)
    }

    async fn lookup_installation(
        &self,
        app: &GitHubApp,
        base: &str,
        owner_repo: &str,
        display_url: &str,
        opts: &ApiOptions<'_>,
    ) -> Result<u64, GitError> {
        let jwt = app_jwt(app, SystemTime::now()).map_err(|detail| GitError::Auth {
            url: display_url.to_string(),
            detail: format!("GitHub App {}: {detail}", app.app_id),
        })?;
        let url = format!("{base}/repos/{owner_repo}/installation");
        let body = self
            .request(reqwest::Method::GET, &url, &jwt, display_url, opts)
            .await?;
        body.get("id")
            .and_then(serde_json::Value::as_u64)
            .filter(|id| *id != 0)
            .ok_or_else(|| GitError::Auth {
                url: display_url.to_string(),
                detail: format!(
                    "GitHub App {}: no installation found for {owner_repo}",
                    app.app_id
                ),
            })
    }

    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        jwt: &str,
        display_url: &str,
        opts: &ApiOptions<'_>,
    ) -> Result<serde_json::Value, GitError> {
        let transport = |detail: String| GitError::Transport {
            url: display_url.to_string(),
            detail: format!("GitHub API {url}: {detail}"),
        };
        let client = self.client(opts).map_err(|detail| GitError::InvalidInput {
            what: "GitHub API client settings".to_string(),
            reason: detail,
        })?;
        let mut req = client
            .request(method.clone(), url)
            .bearer_auth(jwt)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if method == reqwest::Method::POST {
            req = req.json(&serde_json::json!({}));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport(redact_jwt(&e.to_string(), jwt)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| transport(redact_jwt(&e.to_string(), jwt)))?;
        let excerpt: String = text.chars().take(200).collect();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(transport(format!("HTTP {status}: {excerpt}")));
        }
        if !status.is_success() {
            return Err(GitError::Auth {
                url: display_url.to_string(),
                detail: format!("GitHub API {url} answered HTTP {status}: {excerpt}"),
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| transport(format!("the answer is not JSON ({e}): {excerpt}")))
    }
}

fn redact_jwt(text: &str, jwt: &str) -> String {
    text.replace(jwt, "***")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn api_base_follows_upstream() {
        assert_eq!(api_base("github.com"), "https://api.github.com");
        assert_eq!(api_base("api.ghe.example"), "https://api.ghe.example");
        assert_eq!(api_base("ghe.example"), "https://ghe.example/api/v3");
    }

    #[test]
    fn pem_parsing_and_bad_keys() {
        assert_eq!(
            pem_body(
                "junk\n-----BEGIN RSA PRIVATE KEY-----\nQUJD\nREVG\n-----END RSA PRIVATE KEY-----\n"
            ),
            Some(("RSA PRIVATE KEY".to_string(), "QUJDREVG".to_string()))
        );
        let app = GitHubApp {
            app_id: "1".into(),
            private_key: "not a key".into(),
            installation_id: None,
        };
        assert!(
            app_jwt(&app, SystemTime::now())
                .unwrap_err()
                .contains("not PEM")
        );
        let app = GitHubApp {
            private_key: "-----BEGIN RSA PRIVATE KEY-----\nQUJD\n-----END RSA PRIVATE KEY-----"
                .into(),
            ..app
        };
        assert!(
            app_jwt(&app, SystemTime::now())
                .unwrap_err()
                .contains("not a usable RSA key")
        );
    }
}
