//! A real container registry for the tests: Debian's `docker-registry` on 127.0.0.1 with htpasswd
//! basic auth (the engine treats 127.0.0.1 as an insecure registry, so plain HTTP works), and the
//! helpers that push to it with credentials kept out of argv.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Debian's `docker-registry` on 127.0.0.1 with htpasswd basic auth, stopped when dropped.
pub struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry that accepts `user` with `password` (hashed through stdin, never argv).
    pub fn start(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let port = free_port();
        let htpasswd = dir.path().join("htpasswd");
        let mut child = Command::new("htpasswd")
            .args(["-iBc", &htpasswd.display().to_string(), user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run htpasswd (install apache2-utils): {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(password.as_bytes())
                .unwrap_or_else(|e| panic!("htpasswd stdin: {e}"));
        }
        let status = child.wait().unwrap_or_else(|e| panic!("htpasswd: {e}"));
        assert!(status.success(), "htpasswd failed");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: doco-test\n    path: {}\n",
                dir.path().join("data").display(),
                htpasswd.display()
            ),
        )
        .unwrap_or_else(|e| panic!("registry config: {e}"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker-registry (install it): {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`, the registry part of its image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes an image tag when dropped.
pub struct TagGuard(pub String);

impl Drop for TagGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

/// A `config.json` with basic-auth credentials for `registry`.
pub fn auth_config(registry: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string()
}

/// `docker push image` with the docker CLI configuration in `config_dir` (its `config.json`
/// holds the credentials).
pub fn push(config_dir: &Path, image: &str) {
    let out = Command::new("docker")
        .arg("--config")
        .arg(config_dir)
        .args(["push", image])
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker push: {e}"));
    assert!(
        out.status.success(),
        "docker push {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}
