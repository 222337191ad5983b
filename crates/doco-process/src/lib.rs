//! Runs the external programs doco-cd drives (`git`, `docker compose`) safely.
//!
//! Every child gets a null stdin, its own process group and a deadline; when the deadline passes, or the
//! caller stops waiting, the whole group is killed so no grandchild (an `ssh` under `git`, a plugin
//! under `docker`) outlives the call. Arguments are passed as a vector, never through a shell. Secrets
//! handed to [`Cmd::secret`] are replaced by `***` in everything this module returns, so callers can
//! log stderr and build errors from it without leaking them.
//!
//! The module also counts the processes it spawns, per program, so that the daemon can expose the
//! count as a metric and tests can prove that a quiet poll spawns nothing.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

/// A command to run: program, arguments, environment and limits.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    clear_env: bool,
    current_dir: Option<PathBuf>,
    timeout: Duration,
    secrets: Vec<String>,
}

/// What a finished command left behind. `stdout` and `stderr` are already redacted.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code; `None` when the process was ended by a signal.
    pub code: Option<i32>,
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
}

impl Output {
    /// True when the process exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command could not produce an [`Output`].
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (not installed, not executable).
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The deadline passed; the process group was killed.
    #[error("`{program}` did not finish within {}s and was killed", timeout.as_secs())]
    TimedOut {
        /// The program that was killed.
        program: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// Reading the child's output failed.
    #[error("reading the output of `{program}` failed: {source}")]
    Io {
        /// The program whose output could not be read.
        program: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

impl Cmd {
    /// A command running `program` with a default deadline of 60 seconds.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            clear_env: false,
            current_dir: None,
            timeout: Duration::from_secs(60),
            secrets: Vec::new(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Starts the child with an empty environment plus what [`Cmd::env`] adds.
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets the deadline after which the whole process group is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Registers a secret: it is replaced by `***` in the returned output and errors.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        if !secret.is_empty() {
            self.secrets.push(secret);
        }
        self
    }

    /// The program name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments as text, for logs (arguments never carry secrets).
    pub fn display_args(&self) -> String {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command to completion or until its deadline.
    pub async fn run(self) -> Result<Output, ProcessError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if self.clear_env {
            command.env_clear();
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        tracing::debug!(program = %self.program, args = %self.display_args(), "spawning");
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        count_spawn(&self.program);
        let group = child.id().map(|pid| GroupGuard {
            pid: Pid::from_raw(pid as i32),
            armed: true,
        });

        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let collect = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    s.read_to_end(&mut out).await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    s.read_to_end(&mut err).await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let (a, b, status) = tokio::join!(read_out, read_err, child.wait());
            a?;
            b?;
            Ok::<_, std::io::Error>((status?, out, err))
        };

        match tokio::time::timeout(self.timeout, collect).await {
            Ok(Ok((status, out, err))) => {
                if let Some(mut guard) = group {
                    guard.armed = false;
                }
                Ok(Output {
                    code: status.code(),
                    stdout: redact(&String::from_utf8_lossy(&out), &self.secrets),
                    stderr: redact(&String::from_utf8_lossy(&err), &self.secrets),
                })
            }
            Ok(Err(source)) => Err(ProcessError::Io {
                program: self.program.clone(),
                source,
            }),
            Err(_elapsed) => {
                drop(group);
                Err(ProcessError::TimedOut {
                    program: self.program.clone(),
                    timeout: self.timeout,
                })
            }
        }
    }
}

/// Kills the child's whole process group when dropped while armed: on timeout, and when the caller's
/// future is dropped (cancellation) before the child finished.
struct GroupGuard {
    pid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            // The group may already be gone; there is nothing useful to do with that error.
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
    }
}

/// Replaces every occurrence of each secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

static SPAWNS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn count_spawn(program: &str) {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string());
    let mut spawns = SPAWNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *spawns.entry(name).or_insert(0) += 1;
}

/// How many processes this process has spawned so far, per program name (`git`, `docker`).
pub fn spawn_counts() -> BTreeMap<String, u64> {
    SPAWNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let out = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .run()
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(!out.success());
    }

    #[tokio::test]
    async fn redacts_secrets_from_output() {
        let out = Cmd::new("sh")
            .args(["-c", "echo \"token=$TOKEN\" >&2"])
            .env("TOKEN", "s3cr3t-value")
            .secret("s3cr3t-value")
            .run()
            .await
            .unwrap();
        assert_eq!(out.stderr, "token=***\n");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile_dir();
        let marker = dir.join("grandchild-alive");
        // The grandchild would create the marker after 2 s unless the group is killed first.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let err = Cmd::new("sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(300))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!marker.exists(), "the grandchild survived the timeout");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = Cmd::new("doco-no-such-program").run().await.unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn counts_spawns_per_program() {
        let before = spawn_counts().get("true").copied().unwrap_or(0);
        Cmd::new("/bin/true").run().await.unwrap();
        let after = spawn_counts().get("true").copied().unwrap_or(0);
        assert!(after > before);
    }

    #[tokio::test]
    async fn env_clear_hides_the_parent_environment() {
        let out = Cmd::new("/usr/bin/env")
            .env_clear()
            .env("ONLY", "1")
            .run()
            .await
            .unwrap();
        assert_eq!(out.stdout.trim(), "ONLY=1");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "doco-process-test-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
