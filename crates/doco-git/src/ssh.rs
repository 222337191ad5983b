//! SSH remotes: keys, passphrases and host keys for the system OpenSSH client that git runs.
//!
//! - Keys live only in a private temp directory (0700, removed when the client is dropped), each in
//!   a 0600 file. A key with a passphrase is decrypted once into such a copy by `ssh-keygen -p`,
//!   which reads the old passphrase from an askpass helper that prints an environment variable:
//!   the passphrase never appears in any argv.
//! - Host keys are trusted on first use and recorded in a known_hosts file under the directory the
//!   caller gives ([`crate::GitOptions::ssh_dir`], on the data volume), so they survive restarts.
//!   A changed host key is refused (`StrictHostKeyChecking=accept-new`) unless the operator set
//!   [`crate::GitOptions::ssh_accept_changed_host_keys`]; a user-provided known_hosts
//!   ([`crate::GitOptions::ssh_known_hosts`]) is consulted first and never rewritten.
//! - `GIT_SSH_COMMAND` is run by a shell, so every path in it is validated and single-quoted.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use doco_process::Cmd;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::{GitError, SshKey};

/// Files of the SSH set-up: the private directory, the persisted and the user-provided known_hosts.
#[derive(Debug)]
pub(crate) struct SshFiles {
    private: tempfile::TempDir,
    /// Where first-use host keys are recorded.
    pub known_hosts: PathBuf,
    /// The user-provided known_hosts (copied into the private directory), consulted first.
    pub user_known_hosts: Option<PathBuf>,
    keys: Mutex<HashMap<String, PathBuf>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> GitError {
    GitError::Failed {
        command: format!("{what} {}", path.display()),
        detail: e.to_string(),
    }
}

fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), GitError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err("write", path, e))?;
    // `mode` applies only at creation; make sure an existing file gets it too.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", path, e))
}

/// A path that may go into `GIT_SSH_COMMAND` (single-quoted there).
fn check_path(path: &Path) -> Result<String, GitError> {
    let text = path.to_str().ok_or_else(|| GitError::InvalidInput {
        what: format!("SSH file path {}", path.display()),
        reason: "it is not valid UTF-8".to_string(),
    })?;
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '\'' | '"' | '\\'))
    {
        return Err(GitError::InvalidInput {
            what: format!("SSH file path {text:?}"),
            reason: "it contains whitespace, quotes or backslashes".to_string(),
        });
    }
    Ok(text.to_string())
}

impl SshFiles {
    /// Creates the private directory and the known_hosts file (`dir/known_hosts`, 0600, in a 0700
    /// `dir`); with `dir` unset the known_hosts lives in the private directory (not persisted).
    pub fn new(dir: Option<&Path>, user_known_hosts: Option<&str>) -> Result<SshFiles, GitError> {
        let private = tempfile::Builder::new()
            .prefix("doco-cd-ssh-")
            .tempdir()
            .map_err(|e| io_err("create a temp dir in", &std::env::temp_dir(), e))?;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod", private.path(), e))?;
        let dir = dir.map_or_else(|| private.path().to_path_buf(), Path::to_path_buf);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_err("chmod", &dir, e))?;
        }
        let known_hosts = dir.join("known_hosts");
        if !known_hosts.exists() {
            write_private(&known_hosts, b"", 0o600)?;
        }
        check_path(&known_hosts)?;
        let user_known_hosts = match user_known_hosts {
            Some(text) => {
                let path = private.path().join("known_hosts.user");
                write_private(&path, format!("{}\n", text.trim()).as_bytes(), 0o600)?;
                Some(path)
            }
            None => None,
        };
        check_path(private.path())?;
        Ok(SshFiles {
            private,
            known_hosts,
            user_known_hosts,
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// A 0600 file holding `key` without a passphrase (decrypted once, then reused).
    pub async fn key_file(&self, key: &SshKey, timeout: Duration) -> Result<PathBuf, GitError> {
        let mut hasher = Sha256::new();
        hasher.update(key.private_key.as_bytes());
        hasher.update([0]);
        hasher.update(key.passphrase.as_deref().unwrap_or("").as_bytes());
        let id = hex::encode(&hasher.finalize()[..12]);
        let mut keys = self.keys.lock().await;
        if let Some(path) = keys.get(&id) {
            return Ok(path.clone());
        }
        let path = self.private.path().join(format!("key-{id}"));
        // OpenSSH refuses a key file without its final newline.
        write_private(
            &path,
            format!("{}\n", key.private_key.trim()).as_bytes(),
            0o600,
        )?;
        if let Some(passphrase) = key.passphrase.as_deref().filter(|p| !p.is_empty())
            && let Err(e) = self.decrypt(&path, passphrase, timeout).await
        {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        keys.insert(id, path.clone());
        Ok(path)
    }

    /// `ssh-keygen -p -N '' -f KEY`, the old passphrase coming from an askpass helper that prints
    /// `$DOCO_SSH_KEY_PASSPHRASE`.
    async fn decrypt(
        &self,
        key: &Path,
        passphrase: &str,
        timeout: Duration,
    ) -> Result<(), GitError> {
        let askpass = self.private.path().join("askpass.sh");
        write_private(
            &askpass,
            b"#!/bin/sh\nprintf '%s\\n' \"$DOCO_SSH_KEY_PASSPHRASE\"\n",
            0o700,
        )?;
        let output = Cmd::new("ssh-keygen")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env("DOCO_SSH_KEY_PASSPHRASE", passphrase)
            .secret(passphrase)
            .args(["-q", "-p", "-N", "", "-f"])
            .arg(key)
            .timeout(timeout)
            .run()
            .await
            .map_err(|e| GitError::Failed {
                command: "ssh-keygen -p".to_string(),
                detail: e.to_string(),
            })?;
        if output.success() {
            Ok(())
        } else {
            Err(GitError::InvalidInput {
                what: "SSH_PRIVATE_KEY_PASSPHRASE".to_string(),
                reason: format!(
                    "it does not decrypt the SSH private key ({})",
                    crate::error::summarize(&output.stderr)
                ),
            })
        }
    }

    /// The `GIT_SSH_COMMAND` for these key files.
    pub fn command(&self, keys: &[PathBuf], connect_timeout: Duration) -> Result<String, GitError> {
        let mut parts = vec![
            "ssh".to_string(),
            "-F".to_string(),
            "/dev/null".to_string(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "-o".to_string(),
            "StrictHostKeyChecking=accept-new".to_string(),
            "-o".to_string(),
            "UpdateHostKeys=no".to_string(),
            "-o".to_string(),
            format!("ConnectTimeout={}", connect_timeout.as_secs().max(1)),
            "-o".to_string(),
            "ServerAliveInterval=15".to_string(),
            "-o".to_string(),
            "ServerAliveCountMax=2".to_string(),
            "-o".to_string(),
            format!("'UserKnownHostsFile={}'", check_path(&self.known_hosts)?),
            "-o".to_string(),
            format!(
                "'GlobalKnownHostsFile={}'",
                match &self.user_known_hosts {
                    Some(p) => check_path(p)?,
                    None => "/dev/null".to_string(),
                }
            ),
        ];
        for key in keys {
            parts.push("-i".to_string());
            parts.push(format!("'{}'", check_path(key)?));
        }
        Ok(parts.join(" "))
    }

    /// Forgets the recorded host key of `host` (`[host]:port` unless the port is 22), after the
    /// operator allowed changed host keys.
    pub async fn forget_host(
        &self,
        host: &str,
        port: Option<u16>,
        timeout: Duration,
    ) -> Result<(), GitError> {
        let pattern = match port {
            Some(p) if p != 22 => format!("[{host}]:{p}"),
            _ => host.to_string(),
        };
        let output = Cmd::new("ssh-keygen")
            .args(["-R", &pattern, "-f"])
            .arg(&self.known_hosts)
            .timeout(timeout)
            .run()
            .await
            .map_err(|e| GitError::Failed {
                command: "ssh-keygen -R".to_string(),
                detail: e.to_string(),
            })?;
        let _ = std::fs::remove_file(self.known_hosts.with_extension("old"));
        if output.success() {
            Ok(())
        } else {
            Err(GitError::Failed {
                command: format!("ssh-keygen -R {pattern}"),
                detail: crate::error::summarize(&output.stderr),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_for_the_shell_are_checked() {
        assert!(check_path(Path::new("/data/.doco-cd/ssh/known_hosts")).is_ok());
        for bad in ["/a b", "/a'b", "/a\"b", "/a\\b", "/a\nb"] {
            assert!(check_path(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            SshFiles::new(Some(&dir.path().join("ssh")), Some("h ssh-ed25519 AAAA")).unwrap();
        let meta = std::fs::metadata(dir.path().join("ssh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let cmd = files
            .command(&[PathBuf::from("/k/key-1")], Duration::from_secs(7))
            .unwrap();
        assert!(cmd.contains(&format!(
            "'UserKnownHostsFile={}'",
            files.known_hosts.display()
        )));
        assert!(cmd.contains("GlobalKnownHostsFile="), "{cmd}");
        assert!(cmd.contains("ConnectTimeout=7 "), "{cmd}");
        assert!(cmd.ends_with("-i '/k/key-1'"), "{cmd}");
    }
}
