//! A throw-away OpenSSH server on 127.0.0.1 for the git tier: its own host key and
//! `authorized_keys` in a temp dir, a free high port, stopped when dropped.
//!
//! Tests log in as the user running them (root on the project's machines), so git's
//! `git-upload-pack` runs against repositories in temp dirs like any SSH forge would.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Creates a key pair at `path` (`ed25519`, or `rsa` when `kind` says so) with `passphrase`
/// (empty for none); returns the public key line.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) -> String {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "doco-test", "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048", "-m", "PEM"]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", path.display())))
        .unwrap_or_else(|e| panic!("cannot read the public key of {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The user tests log in as.
pub fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .unwrap_or_else(|e| panic!("cannot run id: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running `sshd -D`.
#[derive(Debug)]
pub struct Sshd {
    dir: TempDir,
    port: u16,
    generation: u32,
    child: Option<Child>,
}

impl Sshd {
    /// Starts a server that accepts the public keys in `authorized_keys` (one per line).
    pub fn start(authorized_keys: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("doco-sshd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{authorized_keys}\n"),
        )
        .unwrap_or_else(|e| panic!("cannot write authorized_keys: {e}"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
            .port();
        let mut sshd = Sshd {
            dir,
            port,
            generation: 0,
            child: None,
        };
        sshd.new_host_key();
        sshd.spawn();
        sshd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The current host public key line (`ssh-ed25519 AAAA... doco-test`).
    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(format!("{}.pub", self.host_key().display()))
            .unwrap_or_else(|e| panic!("cannot read the host key: {e}"))
            .trim()
            .to_string()
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        let key = self.host_public_key();
        let mut fields = key.split_whitespace();
        let (kind, data) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {data}", self.port)
    }

    /// Restarts on the same port with a freshly generated host key (a "changed host key").
    pub fn restart_with_new_host_key(&mut self) {
        self.stop();
        self.new_host_key();
        self.spawn();
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn host_key(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("host_key_{}", self.generation))
    }

    fn new_host_key(&mut self) {
        self.generation += 1;
        keygen(&self.host_key(), "ed25519", "");
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| panic!("mkdir /run/sshd: {e}"));
        let authorized = self.dir.path().join("authorized_keys");
        let child = Command::new("/usr/sbin/sshd")
            .args([
                "-D",
                "-e",
                "-f",
                "/dev/null",
                "-p",
                &self.port.to_string(),
                "-h",
            ])
            .arg(self.host_key())
            .args([
                "-o",
                "ListenAddress=127.0.0.1",
                "-o",
                &format!("AuthorizedKeysFile={}", authorized.display()),
                "-o",
                "StrictModes=no",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
                "PermitRootLogin=prohibit-password",
                "-o",
                "UsePAM=no",
                "-o",
                "PidFile=none",
                "-o",
                "LogLevel=ERROR",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start /usr/sbin/sshd (install openssh-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("sshd exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "sshd did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
