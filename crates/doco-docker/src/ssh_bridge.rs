//! `ssh://` engines for the API client, the way the docker CLI reaches them.
//!
//! The docker CLI (and so compose) reaches an `ssh://user@host` engine by running
//! `ssh … host docker system dial-stdio` and speaking HTTP over the process's stdin and stdout.
//! bollard's own `ssh` feature would add a second mechanism (the `openssh` crate and a
//! ControlMaster), with its own failure modes. Instead the API client gets a private unix socket
//! (in a 0700 directory) and every connection made to it is piped through a fresh
//! `ssh … docker system dial-stdio`: the same command, `~/.ssh/config`, keys and `known_hosts` as
//! compose uses, and a broken connection costs only itself (the next request spawns a new one).
//! bollard keeps connections open, so one `ssh` per API request is not the common case; the event
//! stream holds one for as long as it runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::endpoint::SshTarget;

/// A local socket forwarding to an `ssh://` engine; stops forwarding (and kills its `ssh`
/// processes) when dropped.
#[derive(Debug)]
pub(crate) struct SshBridge {
    dir: PathBuf,
    socket: PathBuf,
    accept: tokio::task::JoinHandle<()>,
}

impl SshBridge {
    /// Listens on a new private socket; must run inside a tokio runtime.
    pub(crate) fn start(target: SshTarget) -> std::io::Result<SshBridge> {
        let dir = private_dir()?;
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket)?;
        let accept = tokio::spawn(serve(listener, target));
        Ok(SshBridge {
            dir,
            socket,
            accept,
        })
    }

    /// The socket the API client connects to.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshBridge {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new directory only this user can enter, for the socket.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("doco-cd-ssh-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Accepts connections until aborted; the connections' tasks (and their `ssh`) end with it.
async fn serve(listener: UnixListener, target: SshTarget) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(forward(stream, target.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the ssh bridge cannot accept connections");
                    return;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Pipes one client connection through `ssh … docker system dial-stdio`.
async fn forward(mut stream: UnixStream, target: SshTarget) {
    let spawned = Command::new("ssh")
        .args(target.ssh_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(host = %target.host, error = %e, "cannot start `ssh` for the Docker engine (is openssh-client installed?)");
            return;
        }
    };
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return;
    };
    let mut remote = tokio::io::join(stdout, stdin);
    let copied = tokio::io::copy_bidirectional(&mut stream, &mut remote).await;
    drop(remote);
    let mut errors = String::new();
    let _ = stderr.read_to_string(&mut errors).await;
    let status = child.wait().await;
    let failed = copied.is_err() || !status.as_ref().is_ok_and(|s| s.success());
    if failed && !errors.trim().is_empty() {
        tracing::warn!(host = %target.host, stderr = %errors.trim(), "ssh to the Docker engine failed");
    }
}
