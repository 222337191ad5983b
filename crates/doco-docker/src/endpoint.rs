//! Which Docker engine doco-cd talks to, resolved once and handed to both of its clients.
//!
//! doco-cd reads the engine through the API (bollard) and deploys through the `docker compose` CLI.
//! If each resolved `DOCKER_HOST`, `DOCKER_CONTEXT` and the TLS variables on its own, compose could
//! deploy to one engine while doco-cd watches another (bollard 0.21 knows no contexts, the CLI does).
//! So the daemon resolves an [`Endpoint`] here, as the docker CLI would, connects the API client
//! to it ([`crate::Engine::connect_endpoint`]) and gives compose exactly that endpoint
//! ([`Endpoint::compose_env`]: `DOCKER_HOST` and the TLS files, never a context name).
//!
//! The docker CLI's order: `DOCKER_HOST`, else `DOCKER_CONTEXT`, else `currentContext` of
//! `$DOCKER_CONFIG/config.json`, else the local socket. A context is read from the CLI's store,
//! `$DOCKER_CONFIG/contexts/meta/<sha256(name)>/meta.json`, its TLS files from
//! `contexts/tls/<sha256(name)>/docker/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The socket used when nothing names another engine.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The context name that means "the engine of the environment" (`DOCKER_HOST` or the local socket).
pub const DEFAULT_CONTEXT: &str = "default";

/// Why no endpoint could be resolved.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A host that is not a Docker host URL doco-cd can reach.
    #[error("{origin}: {value:?} is not a usable Docker host: {reason}")]
    BadHost {
        /// Where the host came from (`DOCKER_HOST`, `Docker context "nas"`).
        origin: String,
        /// The host as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A context that is not in the docker CLI's store.
    #[error(
        "Docker context {name:?} does not exist: {path} is missing (create it with `docker context create`, or point DOCKER_CONFIG at the directory that holds it)"
    )]
    UnknownContext {
        /// The context name.
        name: String,
        /// The meta.json that was looked for.
        path: PathBuf,
    },
    /// A context whose files cannot be read or parsed.
    #[error("cannot read Docker context {name:?} from {path}: {reason}")]
    BadContext {
        /// The context name.
        name: String,
        /// The file that failed.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TLS was asked for but one of its files is missing.
    #[error(
        "{origin}: TLS needs {path}, which does not exist (DOCKER_CERT_PATH names the directory holding ca.pem, cert.pem and key.pem)"
    )]
    MissingTlsFile {
        /// What asked for TLS.
        origin: String,
        /// The missing file.
        path: PathBuf,
    },
}

/// One resolved Docker engine: its host URL and, for TLS, the directory with its certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    tls_dir: Option<PathBuf>,
    api_version: Option<String>,
    origin: String,
}

/// How the API client reaches an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A local socket.
    Unix(PathBuf),
    /// `host:port` over plain TCP.
    Tcp(String),
    /// `host:port` over TLS, verified with `ca.pem`, authenticated with `cert.pem`/`key.pem`.
    Tls(String, PathBuf),
    /// The docker CLI's ssh helper: `ssh [-l user] [-p port] host docker system dial-stdio`.
    Ssh(SshTarget),
}

/// The destination of an `ssh://[user@]host[:port]` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login user, when given.
    pub user: Option<String>,
    /// The host name or address.
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
}

impl SshTarget {
    /// The arguments of `ssh` that run the docker CLI's stdio bridge on the remote side, as the
    /// docker CLI's own ssh helper does (plus `BatchMode`: a daemon never answers prompts).
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-o", "ConnectTimeout=30", "-o", "BatchMode=yes", "-T"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(user) = &self.user {
            args.extend(["-l".to_string(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".to_string(), port.to_string()]);
        }
        args.extend(
            ["--", &self.host, "docker", "system", "dial-stdio"]
                .iter()
                .map(|s| s.to_string()),
        );
        args
    }
}

impl Endpoint {
    /// The endpoint the docker CLI would use with environment `env`: `DOCKER_HOST` (with
    /// `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`), else `DOCKER_CONTEXT`, else the `currentContext`
    /// of `config.json`, else the local socket.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Endpoint, EndpointError> {
        let api_version = non_empty(env, "DOCKER_API_VERSION");
        let mut endpoint = if let Some(host) = non_empty(env, "DOCKER_HOST") {
            Endpoint::from_host_env(&host, env)?
        } else if let Some(name) = non_empty(env, "DOCKER_CONTEXT") {
            Endpoint::from_env_context(&name, "DOCKER_CONTEXT", env)?
        } else if let Some(name) = current_context(&docker_config_dir(env))? {
            Endpoint::from_env_context(&name, "currentContext of config.json", env)?
        } else {
            Endpoint::plain(DEFAULT_HOST, "the default socket")
        };
        endpoint.api_version = api_version;
        endpoint.transport()?;
        Ok(endpoint)
    }

    /// The endpoint of this process's environment ([`Endpoint::from_env`]).
    pub fn from_process_env() -> Result<Endpoint, EndpointError> {
        Endpoint::from_env(&std::env::vars().collect())
    }

    /// An endpoint for `host` without TLS (`unix:///path`, `tcp://host:port`, `ssh://user@host`).
    pub fn from_host(host: &str) -> Result<Endpoint, EndpointError> {
        let endpoint = Endpoint::plain(host, "the given host");
        endpoint.transport()?;
        Ok(endpoint)
    }

    /// Context `name` of the docker CLI's store under `config_dir` (`$DOCKER_CONFIG`, by default
    /// `~/.docker`). `default` is not in the store: it means the environment's endpoint.
    pub fn from_context(name: &str, config_dir: &Path) -> Result<Endpoint, EndpointError> {
        let digest = hex(Sha256::digest(name.as_bytes()).as_slice());
        let meta = config_dir
            .join("contexts/meta")
            .join(&digest)
            .join("meta.json");
        let host = context_host(name, &meta)?;
        let origin = format!("Docker context {name:?}");
        let tls = config_dir.join("contexts/tls").join(&digest).join("docker");
        let endpoint = Endpoint {
            host,
            tls_dir: tls.is_dir().then_some(tls),
            api_version: None,
            origin,
        };
        endpoint.check_tls_files()?;
        endpoint.transport()?;
        Ok(endpoint)
    }

    fn from_env_context(
        name: &str,
        variable: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Endpoint, EndpointError> {
        if name == DEFAULT_CONTEXT {
            return Ok(Endpoint::plain(DEFAULT_HOST, "the default context"));
        }
        Endpoint::from_context(name, &docker_config_dir(env)).map(|mut endpoint| {
            endpoint.origin = format!("{} ({variable})", endpoint.origin);
            endpoint
        })
    }

    fn from_host_env(
        host: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Endpoint, EndpointError> {
        let verify = non_empty(env, "DOCKER_TLS_VERIFY");
        let cert_path = non_empty(env, "DOCKER_CERT_PATH");
        let mut endpoint = Endpoint::plain(host, "DOCKER_HOST");
        if verify.is_none() && cert_path.is_none() {
            return Ok(endpoint);
        }
        if !host.starts_with("tcp://") {
            return Err(bad_host(
                "DOCKER_HOST",
                host,
                "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH apply to tcp:// hosts only",
            ));
        }
        // As the docker CLI: without DOCKER_CERT_PATH, the certificates are in DOCKER_CONFIG.
        let dir = cert_path.map_or_else(|| docker_config_dir(env), PathBuf::from);
        endpoint.tls_dir = Some(dir);
        endpoint.origin = "DOCKER_HOST with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH".into();
        endpoint.check_tls_files()?;
        Ok(endpoint)
    }

    fn plain(host: &str, origin: &str) -> Endpoint {
        Endpoint {
            host: host.to_string(),
            tls_dir: None,
            api_version: None,
            origin: origin.to_string(),
        }
    }

    /// The engine's host URL (`unix:///var/run/docker.sock`, `tcp://…`, `ssh://…`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The directory of `ca.pem`, `cert.pem` and `key.pem`, for a TLS endpoint.
    pub fn tls_dir(&self) -> Option<&Path> {
        self.tls_dir.as_deref()
    }

    /// Where this endpoint came from, for messages (`DOCKER_HOST`, `Docker context "nas"`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The variables that make the docker CLI (and compose) talk to this endpoint: `DOCKER_HOST`,
    /// for TLS `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH`, and `DOCKER_API_VERSION` when set.
    pub fn compose_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("DOCKER_HOST".to_string(), self.host.clone())]);
        if let Some(dir) = &self.tls_dir {
            env.insert("DOCKER_TLS_VERIFY".into(), "1".into());
            env.insert("DOCKER_CERT_PATH".into(), dir.display().to_string());
        }
        if let Some(version) = &self.api_version {
            env.insert("DOCKER_API_VERSION".into(), version.clone());
        }
        env
    }

    fn check_tls_files(&self) -> Result<(), EndpointError> {
        let Some(dir) = &self.tls_dir else {
            return Ok(());
        };
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(EndpointError::MissingTlsFile {
                    origin: self.origin.clone(),
                    path,
                });
            }
        }
        Ok(())
    }

    /// How the API client connects.
    pub(crate) fn transport(&self) -> Result<Transport, EndpointError> {
        let bad = |reason: &str| bad_host(&self.origin, &self.host, reason);
        let (scheme, rest) = self
            .host
            .split_once("://")
            .ok_or_else(|| bad("expected unix://, tcp:// or ssh://"))?;
        match scheme {
            "unix" if rest.starts_with('/') => Ok(Transport::Unix(PathBuf::from(rest))),
            "unix" => Err(bad("a unix:// host needs an absolute socket path")),
            "tcp" => {
                let address = tcp_address(rest, self.tls_dir.is_some()).map_err(|r| bad(&r))?;
                Ok(match &self.tls_dir {
                    Some(dir) => Transport::Tls(address, dir.clone()),
                    None => Transport::Tcp(address),
                })
            }
            "ssh" => ssh_target(rest).map(Transport::Ssh).map_err(|r| bad(&r)),
            _ => Err(bad("expected unix://, tcp:// or ssh://")),
        }
    }
}

/// `host:port` of a `tcp://` host, with the docker CLI's default port (2376 with TLS, else 2375).
fn tcp_address(rest: &str, tls: bool) -> Result<String, String> {
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err("expected tcp://host:port".into());
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok() && !authority.ends_with(']'));
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 2376 } else { 2375 })
    })
}

/// `[user@]host[:port]` of an `ssh://` host; a path is refused, as by the docker CLI.
fn ssh_target(rest: &str) -> Result<SshTarget, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.is_empty() {
        return Err(format!("an ssh:// host takes no path (got /{path})"));
    }
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host_port.ends_with(']') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?;
            (host.to_string(), Some(port))
        }
        _ => (host_port.to_string(), None),
    };
    if host.is_empty() || host.starts_with('-') {
        return Err("expected ssh://[user@]host[:port]".into());
    }
    Ok(SshTarget { user, host, port })
}

/// `docker context`'s `Endpoints.docker.Host` of the context at `meta`.
fn context_host(name: &str, meta: &Path) -> Result<String, EndpointError> {
    let text = match std::fs::read_to_string(meta) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EndpointError::UnknownContext {
                name: name.to_string(),
                path: meta.to_path_buf(),
            });
        }
        Err(e) => return Err(bad_context(name, meta, e.to_string())),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad_context(name, meta, e.to_string()))?;
    let docker = &value["Endpoints"]["docker"];
    if docker["SkipTLSVerify"].as_bool() == Some(true) {
        return Err(bad_context(
            name,
            meta,
            "SkipTLSVerify is set: doco-cd always verifies the engine's certificate".into(),
        ));
    }
    docker["Host"]
        .as_str()
        .filter(|host| !host.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad_context(name, meta, "no Endpoints.docker.Host".into()))
}

/// `currentContext` of `config.json` in `config_dir`, when set to something other than `default`.
fn current_context(config_dir: &Path) -> Result<Option<String>, EndpointError> {
    let path = config_dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad_context("currentContext", &path, e.to_string()))?;
    Ok(value["currentContext"]
        .as_str()
        .filter(|name| !name.is_empty() && *name != DEFAULT_CONTEXT)
        .map(str::to_string))
}

/// The docker CLI's configuration directory: `DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn docker_config_dir(env: &BTreeMap<String, String>) -> PathBuf {
    match non_empty(env, "DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env.get("HOME").map_or("/root", String::as_str)).join(".docker"),
    }
}

fn non_empty(env: &BTreeMap<String, String>, key: &str) -> Option<String> {
    env.get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn bad_host(origin: &str, value: &str, reason: &str) -> EndpointError {
    EndpointError::BadHost {
        origin: origin.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn bad_context(name: &str, path: &Path, reason: String) -> EndpointError {
    EndpointError::BadContext {
        name: name.to_string(),
        path: path.to_path_buf(),
        reason,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Writes context `name` with `host` into the store under `dir`, with TLS files when `tls`.
    fn write_context(dir: &Path, name: &str, host: &str, tls: bool) {
        let digest = hex(Sha256::digest(name.as_bytes()).as_slice());
        let meta = dir.join("contexts/meta").join(&digest);
        std::fs::create_dir_all(&meta).unwrap();
        let json = serde_json::json!({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}});
        std::fs::write(meta.join("meta.json"), json.to_string()).unwrap();
        if tls {
            let tls = dir.join("contexts/tls").join(&digest).join("docker");
            std::fs::create_dir_all(&tls).unwrap();
            for file in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::write(tls.join(file), "x").unwrap();
            }
        }
    }

    #[test]
    fn the_store_is_keyed_by_the_sha256_of_the_name() {
        // `docker context create nas` writes contexts/meta/<sha256("nas")>/meta.json.
        let dir = tempfile::tempdir().unwrap();
        let meta = dir
            .path()
            .join("contexts/meta/047de0f543c7e3596bb6dbd0e65f2c30357720a63eca423f08c52fae314f6806");
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Endpoints":{"docker":{"Host":"ssh://nas"}}}"#,
        )
        .unwrap();
        let endpoint = Endpoint::from_context("nas", dir.path()).unwrap();
        assert_eq!(endpoint.host(), "ssh://nas");
        assert_eq!(endpoint.tls_dir(), None);
    }

    #[test]
    fn the_order_is_docker_host_then_context_then_current_context_then_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().display().to_string();
        write_context(dir.path(), "nas", "ssh://deploy@nas:2222", false);
        write_context(dir.path(), "box", "tcp://box:2375", false);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"box"}"#,
        )
        .unwrap();
        let cases = [
            (
                vec![
                    ("DOCKER_HOST", "unix:///run/d.sock"),
                    ("DOCKER_CONTEXT", "nas"),
                ],
                "unix:///run/d.sock",
            ),
            (vec![("DOCKER_CONTEXT", "nas")], "ssh://deploy@nas:2222"),
            (vec![("DOCKER_CONTEXT", "default")], DEFAULT_HOST),
            (vec![], "tcp://box:2375"),
        ];
        for (vars, host) in cases {
            let mut vars = vars;
            vars.push(("DOCKER_CONFIG", &config));
            assert_eq!(
                Endpoint::from_env(&env(&vars)).unwrap().host(),
                host,
                "{vars:?}"
            );
        }
        let empty = tempfile::tempdir().unwrap();
        let vars = env(&[("HOME", &empty.path().display().to_string())]);
        assert_eq!(Endpoint::from_env(&vars).unwrap().host(), DEFAULT_HOST);
    }

    #[test]
    fn compose_gets_the_resolved_host_never_the_context_name() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "remote", "tcp://10.0.0.2:2376", true);
        let endpoint = Endpoint::from_context("remote", dir.path()).unwrap();
        let compose = endpoint.compose_env();
        assert_eq!(compose["DOCKER_HOST"], "tcp://10.0.0.2:2376");
        assert_eq!(compose["DOCKER_TLS_VERIFY"], "1");
        assert!(compose["DOCKER_CERT_PATH"].ends_with("/docker"));
        assert!(!compose.contains_key("DOCKER_CONTEXT"));
        assert_eq!(
            endpoint.transport().unwrap(),
            Transport::Tls(
                "10.0.0.2:2376".into(),
                endpoint.tls_dir().unwrap().to_path_buf()
            )
        );
    }

    #[test]
    fn tls_from_the_environment_needs_its_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let vars = [
            ("DOCKER_HOST", "tcp://127.0.0.1"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", path.as_str()),
        ];
        let err = Endpoint::from_env(&env(&vars)).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("DOCKER_CERT_PATH"),
            "{err}"
        );
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(file), "x").unwrap();
        }
        let endpoint = Endpoint::from_env(&env(&vars)).unwrap();
        assert_eq!(
            endpoint.transport().unwrap(),
            Transport::Tls("127.0.0.1:2376".into(), dir.path().to_path_buf())
        );
        let unix = [
            ("DOCKER_HOST", "unix:///x.sock"),
            ("DOCKER_TLS_VERIFY", "1"),
        ];
        let err = Endpoint::from_env(&env(&unix)).unwrap_err().to_string();
        assert!(err.contains("tcp:// hosts only"), "{err}");
    }

    #[test]
    fn hosts_are_parsed_as_the_docker_cli_reads_them() {
        let ok = [
            (
                "unix:///var/run/docker.sock",
                Transport::Unix("/var/run/docker.sock".into()),
            ),
            (
                "tcp://10.0.0.1:2375",
                Transport::Tcp("10.0.0.1:2375".into()),
            ),
            ("tcp://engine", Transport::Tcp("engine:2375".into())),
            (
                "ssh://deploy@nas:2222",
                Transport::Ssh(SshTarget {
                    user: Some("deploy".into()),
                    host: "nas".into(),
                    port: Some(2222),
                }),
            ),
            (
                "ssh://nas",
                Transport::Ssh(SshTarget {
                    user: None,
                    host: "nas".into(),
                    port: None,
                }),
            ),
        ];
        for (host, transport) in ok {
            assert_eq!(
                Endpoint::from_host(host).unwrap().transport().unwrap(),
                transport,
                "{host}"
            );
        }
        for host in [
            "/var/run/docker.sock",
            "npipe:////./pipe/docker",
            "unix://relative",
            "ssh://nas/var/run",
            "ssh://-oProxyCommand=x",
            "ssh://nas:port",
        ] {
            let err = Endpoint::from_host(host).unwrap_err().to_string();
            assert!(err.contains(host), "{err}");
        }
    }

    #[test]
    fn ssh_runs_the_remote_stdio_bridge_after_a_double_dash() {
        let target = SshTarget {
            user: Some("deploy".into()),
            host: "nas".into(),
            port: Some(2222),
        };
        assert_eq!(
            target.ssh_args().join(" "),
            "-o ConnectTimeout=30 -o BatchMode=yes -T -l deploy -p 2222 -- nas docker system dial-stdio"
        );
    }

    #[test]
    fn unknown_and_insecure_contexts_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Endpoint::from_context("nas", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nas\" does not exist") && err.contains("meta.json"),
            "{err}"
        );
        let digest = hex(Sha256::digest(b"lax").as_slice());
        let meta = dir.path().join("contexts/meta").join(digest);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Endpoints":{"docker":{"Host":"tcp://x:2376","SkipTLSVerify":true}}}"#,
        )
        .unwrap();
        let err = Endpoint::from_context("lax", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("SkipTLSVerify"), "{err}");
    }
}
