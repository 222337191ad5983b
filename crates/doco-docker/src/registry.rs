//! The registry's current digest of an image tag, for `force_image_pull` at an unchanged commit.
//!
//! A tag such as `:latest` can move in the registry while the commit stays the same; only the
//! registry knows. Asking costs one `HEAD /v2/<repository>/manifests/<tag>` per image: the answer's
//! `Docker-Content-Digest` header is the digest the engine records in an image's `RepoDigests` when
//! it pulls that tag, so comparing the two says whether the tag moved without downloading anything
//! (and, on Docker Hub, without counting as a pull). This is upstream's `images.go` lookup:
//! - the `Accept` header lists the OCI index and manifest and the Docker manifest list and v2
//!   manifest, so the registry answers with the digest of what a pull would fetch;
//! - credentials are those compose pulls with: the docker CLI's `config.json` in the directory
//!   compose gets as `DOCKER_CONFIG` (`auths` entries, else `credHelpers`/`credsStore` helpers), sent
//!   as basic auth; without any, the request is anonymous;
//! - a `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` is answered by fetching a
//!   token from the realm (with the credentials, if any) and asking again with it.
//!
//! The engine treats registries on loopback addresses as insecure (plain HTTP); so does this client
//! for `localhost`, `127.0.0.0/8` and `::1`, after HTTPS fails. Credentials and tokens never reach a
//! log line, an error message or a process's argv (a helper gets the registry on stdin).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The manifest media types a pull accepts, as upstream sends them.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json";

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the registry's digest of an image is not known.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not name a tag in a registry.
    #[error("{reference} is not an image reference doco-cd can look up in a registry")]
    BadReference {
        /// The reference as given.
        reference: String,
    },
    /// The registry did not answer (connection refused, DNS, TLS, timeout).
    #[error("registry {registry} is not reachable while looking up {image}: {reason}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The image looked up.
        image: String,
        /// The transport's reason.
        reason: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {registry} answered {status} for the manifest of {image}")]
    Status {
        /// The registry host.
        registry: String,
        /// The image looked up.
        image: String,
        /// The HTTP status.
        status: u16,
    },
    /// The registry answered without the digest header.
    #[error("registry {registry} sent no Docker-Content-Digest for {image}")]
    NoDigest {
        /// The registry host.
        registry: String,
        /// The image looked up.
        image: String,
    },
    /// The registry's token service refused or answered nonsense.
    #[error("the token service of registry {registry} failed for {image}: {reason}")]
    Token {
        /// The registry host.
        registry: String,
        /// The image looked up.
        image: String,
        /// What went wrong (never the token or the credentials).
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper `{binary}` failed for registry {registry}: {reason}")]
    Helper {
        /// The helper binary.
        binary: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong (never its output).
        reason: String,
    },
}

impl RegistryError {
    /// The registry the error is about (a reference that cannot be parsed names itself).
    pub fn registry(&self) -> &str {
        match self {
            RegistryError::BadReference { reference } => reference,
            RegistryError::Unreachable { registry, .. }
            | RegistryError::Status { registry, .. }
            | RegistryError::NoDigest { registry, .. }
            | RegistryError::Token { registry, .. }
            | RegistryError::Helper { registry, .. } => registry,
        }
    }
}

/// An image reference, normalized as the docker CLI does (`nginx` is
/// `docker.io/library/nginx:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry's domain as written (`docker.io` for Docker Hub), with its port.
    pub domain: String,
    /// The repository path within the registry (`library/nginx`).
    pub path: String,
    /// The tag (`latest` when none is written).
    pub tag: String,
    /// The digest the reference is pinned to, if any (such a reference never moves).
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference` (`name[:tag][@digest]`); `None` for an image id or an empty string.
    pub fn parse(reference: &str) -> Option<ImageRef> {
        let reference = reference.trim();
        if reference.is_empty() || reference.starts_with("sha256:") {
            return None;
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_string())),
            None => (reference, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
            None => (name, "latest"),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_string()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || tag.is_empty() {
            return None;
        }
        Some(ImageRef {
            domain,
            path,
            tag: tag.to_string(),
            digest,
        })
    }

    /// The repository without tag or digest, normalized (`docker.io/library/nginx`): what a
    /// `RepoDigests` entry of the same repository starts with once parsed.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The host the registry API is served from.
    fn api_host(&self) -> &str {
        if self.domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.domain
        }
    }

    /// The key of the registry's credentials in `config.json`.
    fn auth_key(&self) -> &str {
        if self.domain == "docker.io" {
            "https://index.docker.io/v1/"
        } else {
            &self.domain
        }
    }

    /// Whether the engine treats the registry as insecure by default (loopback).
    fn insecure(&self) -> bool {
        let host = self
            .domain
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(self.domain.as_str(), |(host, _)| host);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

/// How a request authenticates. The `Debug` form never shows the secret.
#[derive(Clone, PartialEq, Eq)]
enum Credential {
    Anonymous,
    /// base64 of `user:password`, as `config.json`'s `auth` holds it.
    Basic(String),
    /// An identity or registry token.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Anonymous => "Anonymous",
            Credential::Basic(_) => "Basic(..)",
            Credential::Bearer(_) => "Bearer(..)",
        })
    }
}

impl Credential {
    fn header(&self) -> Option<String> {
        match self {
            Credential::Anonymous => None,
            Credential::Basic(encoded) => Some(format!("Basic {encoded}")),
            Credential::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }
}

/// A `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Challenge {
    realm: String,
    service: String,
    scope: String,
}

/// Parses `Bearer realm="…",service="…",scope="…"`; `None` for another scheme or no realm.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut challenge = Challenge::default();
    for pair in split_params(params) {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => challenge.realm = value,
            "service" => challenge.service = value,
            "scope" => challenge.scope = value,
            _ => {}
        }
    }
    (!challenge.realm.is_empty()).then_some(challenge)
}

/// Splits challenge parameters at the commas outside quotes (a scope may hold `pull,push`).
fn split_params(params: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in params.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&params[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&params[start..]);
    parts
}

/// Asks registries for the current digest of image tags, with the credentials of the docker CLI
/// configuration in `docker_config` (the directory compose gets as `DOCKER_CONFIG`).
#[derive(Debug, Clone)]
pub struct Registry {
    client: reqwest::Client,
    docker_config: PathBuf,
}

impl Registry {
    /// A client reading credentials from `docker_config/config.json` at each lookup (so rotated
    /// credentials are used at once).
    pub fn new(docker_config: &Path) -> Registry {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            // Building fails only when the TLS backend cannot initialize; a default client then
            // fails each request with a clear error instead of the daemon not starting.
            .unwrap_or_default();
        Registry {
            client,
            docker_config: docker_config.to_path_buf(),
        }
    }

    /// The digest the registry holds for `reference`'s tag now.
    pub async fn digest(&self, reference: &str) -> Result<String, RegistryError> {
        let image = ImageRef::parse(reference).ok_or_else(|| RegistryError::BadReference {
            reference: reference.to_string(),
        })?;
        let credential = self.credential(&image).await?;
        match self.head(reference, &image, "https", &credential).await {
            Err(RegistryError::Unreachable { .. }) if image.insecure() => {
                self.head(reference, &image, "http", &credential).await
            }
            other => other,
        }
    }

    /// One manifest HEAD over `scheme`, answering a bearer challenge once.
    async fn head(
        &self,
        reference: &str,
        image: &ImageRef,
        scheme: &str,
        credential: &Credential,
    ) -> Result<String, RegistryError> {
        let manifest = image.digest.as_deref().unwrap_or(&image.tag);
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{manifest}",
            image.api_host(),
            image.path
        );
        let response = self.send_head(reference, image, &url, credential).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return digest_of(reference, image, &response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let Some(challenge) = challenge else {
            return digest_of(reference, image, &response);
        };
        let token = self.token(reference, image, &challenge, credential).await?;
        let retried = self
            .send_head(reference, image, &url, &Credential::Bearer(token))
            .await?;
        digest_of(reference, image, &retried)
    }

    async fn send_head(
        &self,
        reference: &str,
        image: &ImageRef,
        url: &str,
        credential: &Credential,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self
            .client
            .head(url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(value) = credential.header() {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                registry: image.domain.clone(),
                image: reference.to_string(),
                reason: transport_reason(&e),
            })
    }

    /// The bearer token for `challenge`, asked with `credential` (the scope defaults to pulling
    /// the image's repository).
    async fn token(
        &self,
        reference: &str,
        image: &ImageRef,
        challenge: &Challenge,
        credential: &Credential,
    ) -> Result<String, RegistryError> {
        let failed = |reason: String| RegistryError::Token {
            registry: image.domain.clone(),
            image: reference.to_string(),
            reason,
        };
        let scope = if challenge.scope.is_empty() {
            format!("repository:{}:pull", image.path)
        } else {
            challenge.scope.clone()
        };
        let mut url = reqwest::Url::parse(&challenge.realm)
            .map_err(|e| failed(format!("its realm {:?} is not a URL: {e}", challenge.realm)))?;
        url.query_pairs_mut().append_pair("scope", &scope);
        if !challenge.service.is_empty() {
            url.query_pairs_mut()
                .append_pair("service", &challenge.service);
        }
        let mut request = self.client.get(url);
        if let Some(value) = credential.header() {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| failed(transport_reason(&e)))?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "it answered {}",
                response.status().as_u16()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| failed("its answer is not JSON".into()))?;
        ["token", "access_token"]
            .iter()
            .find_map(|key| body.get(key).and_then(Value::as_str))
            .filter(|token| !token.is_empty())
            .map(str::to_string)
            .ok_or_else(|| failed("its answer holds no token".into()))
    }

    /// The credentials `config.json` holds for `image`'s registry: an `auths` entry, else a
    /// credential helper's answer, else none.
    async fn credential(&self, image: &ImageRef) -> Result<Credential, RegistryError> {
        let file = self.docker_config.join("config.json");
        let config: Value = match std::fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if let Some(entry) = auth_entry(&config, image) {
            let credential = entry_credential(entry);
            if credential != Credential::Anonymous {
                return Ok(credential);
            }
        }
        let helper = config
            .get("credHelpers")
            .and_then(|h| h.get(&image.domain))
            .or_else(|| config.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty());
        match helper {
            Some(helper) => ask_helper(helper, image).await,
            None => Ok(Credential::Anonymous),
        }
    }
}

/// The `auths` entry of `image`'s registry: its exact key, or a key naming the same host with a
/// scheme or a path (`https://127.0.0.1:5000/v2/`), as the docker CLI accepts.
fn auth_entry<'a>(config: &'a Value, image: &ImageRef) -> Option<&'a Value> {
    let auths = config.get("auths")?.as_object()?;
    auths.get(image.auth_key()).or_else(|| {
        auths
            .iter()
            .find(|(key, _)| host_of(key) == image.domain)
            .map(|(_, entry)| entry)
    })
}

/// `https://host:port/path` → `host:port`.
fn host_of(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// The credential of one `auths` entry: `auth`, `username`/`password`, or a token.
fn entry_credential(entry: &Value) -> Credential {
    let text = |key: &str| {
        entry
            .get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = text("auth") {
        return Credential::Basic(auth.to_string());
    }
    if let Some(token) = text("registrytoken").or_else(|| text("identitytoken")) {
        return Credential::Bearer(token.to_string());
    }
    match (text("username"), text("password")) {
        (Some(user), Some(password)) => Credential::Basic(basic(user, password)),
        _ => Credential::Anonymous,
    }
}

/// base64 of `user:password`, as HTTP basic auth sends it.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Asks `docker-credential-<helper> get` for `image`'s registry (the server on stdin, the
/// answer on stdout: `{"Username": …, "Secret": …}`; the user `<token>` means an identity token).
async fn ask_helper(helper: &str, image: &ImageRef) -> Result<Credential, RegistryError> {
    use tokio::io::AsyncWriteExt;
    let binary = format!("docker-credential-{helper}");
    let failed = |reason: String| RegistryError::Helper {
        binary: binary.clone(),
        registry: image.domain.clone(),
        reason,
    };
    let mut child = tokio::process::Command::new(&binary)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(image.auth_key().as_bytes())
            .await
            .map_err(|e| failed(format!("cannot write to it: {e}")))?;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        // "credentials not found" is an exit 1: the registry is then asked anonymously.
        return Ok(Credential::Anonymous);
    }
    let answer: Value = serde_json::from_slice(&output.stdout)
        .map_err(|_| failed("its answer is not JSON".into()))?;
    let field = |key: &str| answer.get(key).and_then(Value::as_str).unwrap_or_default();
    Ok(match (field("Username"), field("Secret")) {
        (_, "") => Credential::Anonymous,
        ("<token>", token) => Credential::Bearer(token.to_string()),
        (user, secret) => Credential::Basic(basic(user, secret)),
    })
}

/// The digest in a successful manifest answer.
fn digest_of(
    reference: &str,
    image: &ImageRef,
    response: &reqwest::Response,
) -> Result<String, RegistryError> {
    if !response.status().is_success() {
        return Err(RegistryError::Status {
            registry: image.domain.clone(),
            image: reference.to_string(),
            status: response.status().as_u16(),
        });
    }
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .ok_or_else(|| RegistryError::NoDigest {
            registry: image.domain.clone(),
            image: reference.to_string(),
        })
}

/// A transport error's reason with its causes (reqwest's own message is only "error sending
/// request"). No URL here carries a secret: credentials travel in headers only.
fn transport_reason(error: &reqwest::Error) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

    use super::*;
    use doco_testkit::http::{HttpServer, Response};

    #[test]
    fn references_are_normalized_as_the_docker_cli_does() {
        let cases = [
            ("nginx", "docker.io", "library/nginx", "latest", None),
            ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
            (
                "index.docker.io/me/app:v1",
                "docker.io",
                "me/app",
                "v1",
                None,
            ),
            (
                "127.0.0.1:5000/app",
                "127.0.0.1:5000",
                "app",
                "latest",
                None,
            ),
            ("localhost/a/b:c", "localhost", "a/b", "c", None),
            (
                "ghcr.io/o/r@sha256:ab",
                "ghcr.io",
                "o/r",
                "latest",
                Some("sha256:ab"),
            ),
            (
                "ghcr.io/o/r:t@sha256:ab",
                "ghcr.io",
                "o/r",
                "t",
                Some("sha256:ab"),
            ),
        ];
        for (reference, domain, path, tag, digest) in cases {
            let parsed = ImageRef::parse(reference).unwrap();
            assert_eq!(
                (
                    parsed.domain.as_str(),
                    parsed.path.as_str(),
                    parsed.tag.as_str()
                ),
                (domain, path, tag),
                "{reference}"
            );
            assert_eq!(parsed.digest.as_deref(), digest, "{reference}");
        }
        assert_eq!(ImageRef::parse("sha256:0123"), None);
        assert_eq!(ImageRef::parse(""), None);
        assert!(ImageRef::parse("127.0.0.1:5000/app").unwrap().insecure());
        assert!(!ImageRef::parse("ghcr.io/o/r").unwrap().insecure());
    }

    #[test]
    fn bearer_challenges_are_parsed_with_quoted_commas() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(challenge.realm, "https://auth.example/token");
        assert_eq!(challenge.service, "reg");
        assert_eq!(challenge.scope, "repository:a/b:pull,push");
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn basic_auth_is_standard_base64() {
        assert_eq!(basic("user", "pass"), "dXNlcjpwYXNz");
        assert_eq!(basic("a", "b"), "YTpi");
        assert_eq!(basic("ab", "cd"), "YWI6Y2Q=");
    }

    #[test]
    fn auths_entries_match_by_host_and_never_print_secrets() {
        let config = serde_json::json!({"auths": {
            "https://127.0.0.1:5000/v2/": {"auth": "c2VjcmV0"},
            "https://index.docker.io/v1/": {"username": "u", "password": "p"},
            "ghcr.io": {"identitytoken": "tok"},
        }});
        let credential =
            |r: &str| entry_credential(auth_entry(&config, &ImageRef::parse(r).unwrap()).unwrap());
        assert_eq!(
            credential("127.0.0.1:5000/app"),
            Credential::Basic("c2VjcmV0".into())
        );
        assert_eq!(credential("nginx"), Credential::Basic(basic("u", "p")));
        assert_eq!(credential("ghcr.io/o/r"), Credential::Bearer("tok".into()));
        assert_eq!(format!("{:?}", credential("ghcr.io/o/r")), "Bearer(..)");
    }

    /// A registry that demands a bearer token from its own token endpoint, which demands basic
    /// auth: the whole upstream flow, request by request.
    #[tokio::test]
    async fn the_bearer_token_flow_is_followed_with_the_configured_credentials() {
        let digest = "sha256:4242";
        let server = HttpServer::start(move |request| {
            let (path, query) = request.path_and_query();
            let auth = request
                .header("authorization")
                .unwrap_or_default()
                .to_string();
            match path {
                "/token" if auth == "Basic dXNlcjpwYXNz" && query.contains("scope=repository%3Aapp%3Apull") => {
                    Response::new(200, r#"{"token": "t0k"}"#)
                }
                "/token" => Response::new(401, ""),
                "/v2/app/manifests/latest" if auth == "Bearer t0k" => {
                    Response::new(200, "").with_header("Docker-Content-Digest", digest)
                }
                _ => Response::new(401, "").with_header(
                    "WWW-Authenticate",
                    &format!(
                        r#"Bearer realm="http://{}/token",service="test",scope="repository:app:pull""#,
                        request.header("host").unwrap_or_default()
                    ),
                ),
            }
        });
        let config = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", server.port());
        std::fs::write(
            config.path().join("config.json"),
            serde_json::json!({"auths": {host.clone(): {"username": "user", "password": "pass"}}})
                .to_string(),
        )
        .unwrap();
        let registry = Registry::new(config.path());
        let found = registry
            .digest(&format!("{host}/app:latest"))
            .await
            .unwrap();
        assert_eq!(found, digest);
        let requests = server.requests();
        let head = requests.iter().find(|r| r.method == "HEAD").unwrap();
        assert!(
            head.header("accept")
                .unwrap()
                .contains("application/vnd.oci.image.index.v1+json"),
            "{head:?}"
        );
        assert!(
            head.header("accept")
                .unwrap()
                .contains("application/vnd.docker.distribution.manifest.v2+json"),
            "{head:?}"
        );
        std::fs::write(config.path().join("config.json"), "{}").unwrap();
        let err = registry
            .digest(&format!("{host}/app:latest"))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Token { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_an_error_naming_it() {
        let config = tempfile::tempdir().unwrap();
        let registry = Registry::new(config.path());
        let err = registry.digest("127.0.0.1:9/app:latest").await.unwrap_err();
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
        assert_eq!(err.registry(), "127.0.0.1:9");
        assert!(err.to_string().contains("127.0.0.1:9/app:latest"), "{err}");
    }
}
