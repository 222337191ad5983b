//! SSH remotes against a throw-away `sshd` on 127.0.0.1: key authentication, a key with a
//! passphrase, host keys trusted on first use and persisted in the given directory, a changed host
//! key refused (unless allowed), and a user-provided known_hosts honoured.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doco_git::{GitClient, GitError, GitOptions, SshKey, resolved_commit};
use doco_testkit::git::{BareRepo, WorkTree};
use doco_testkit::sshd::{Sshd, current_user, keygen};

struct Fixture {
    keys: tempfile::TempDir,
    data: tempfile::TempDir,
    bare: BareRepo,
    work: WorkTree,
    sshd: Sshd,
    sha: String,
}

impl Fixture {
    fn new(passphrase: &str) -> Fixture {
        let keys = tempfile::tempdir().unwrap();
        let public = keygen(&keys.path().join("id"), "ed25519", passphrase);
        let sshd = Sshd::start(&public);
        let bare = BareRepo::new();
        let work = WorkTree::clone_from(&bare);
        work.write("compose.yaml", "services: {}\n");
        let sha = work.commit_and_push("first");
        Fixture {
            keys,
            data: tempfile::tempdir().unwrap(),
            bare,
            work,
            sshd,
            sha,
        }
    }

    fn key(&self, passphrase: Option<&str>) -> SshKey {
        SshKey {
            private_key: std::fs::read_to_string(self.keys.path().join("id")).unwrap(),
            passphrase: passphrase.map(String::from),
        }
    }

    fn ssh_dir(&self) -> PathBuf {
        self.data.path().join(".doco-cd/ssh")
    }

    fn known_hosts(&self) -> String {
        std::fs::read_to_string(self.ssh_dir().join("known_hosts")).unwrap_or_default()
    }

    fn options(&self, key: SshKey) -> GitOptions {
        GitOptions {
            ssh_key: Some(key),
            ssh_dir: Some(self.ssh_dir()),
            timeout: Duration::from_secs(60),
            ..GitOptions::default()
        }
    }

    fn url(&self) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            current_user(),
            self.sshd.port(),
            self.bare.path().display()
        )
    }

    fn mirror(&self) -> PathBuf {
        self.data.path().join("127.0.0.1/repo")
    }
}

fn key_data(line: &str) -> String {
    line.split_whitespace().nth(1).unwrap().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn key_auth_and_host_key_trusted_on_first_use_persisted() {
    let mut f = Fixture::new("");
    let c = GitClient::new(f.options(f.key(None)));
    assert!(!f.ssh_dir().exists());
    let out = c.sync(&f.url(), "main", &f.mirror()).await.unwrap();
    assert_eq!((out.commit.as_str(), out.cloned), (f.sha.as_str(), true));

    // First use recorded the host key on the data volume, privately.
    let known = f.known_hosts();
    let host_key = key_data(&f.sshd.host_public_key());
    assert!(
        known.contains(&format!("[127.0.0.1]:{}", f.sshd.port())),
        "{known}"
    );
    assert!(known.contains(&host_key), "{known}");
    assert_eq!(mode(&f.ssh_dir()), 0o700);
    assert_eq!(mode(&f.ssh_dir().join("known_hosts")), 0o600);
    // Only known_hosts lives there: the key is never written to the data volume.
    let names: Vec<String> = std::fs::read_dir(f.ssh_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["known_hosts"]);

    // A new client (a restart) trusts the recorded key; nothing is added.
    let restarted = GitClient::new(f.options(f.key(None)));
    let newer = f.work.commit_and_push("second");
    let out = restarted.sync(&f.url(), "main", &f.mirror()).await.unwrap();
    assert_eq!(out.commit, newer);
    assert_eq!(f.known_hosts(), known);

    // The scp-like form (git's `user@[host:port]:path` for a non-default port).
    let scp = format!(
        "{}@[127.0.0.1:{}]:{}",
        current_user(),
        f.sshd.port(),
        f.bare.path().display()
    );
    assert_eq!(restarted.ls_remote(&scp, "main").await.unwrap(), newer);

    // Another key is refused: an authentication error, not "offline".
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("id"), "ed25519", "");
    let stranger = GitClient::new(f.options(SshKey {
        private_key: std::fs::read_to_string(other.path().join("id")).unwrap(),
        passphrase: None,
    }));
    let err = stranger.ls_remote(&f.url(), "main").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");

    // A stopped server is a transport error.
    f.sshd.stop();
    let err = restarted.ls_remote(&f.url(), "main").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
}

#[tokio::test]
async fn key_with_a_passphrase() {
    let passphrase = "correct horse battery staple";
    let f = Fixture::new(passphrase);
    let private = f.key(None).private_key;
    assert!(private.contains("OPENSSH PRIVATE KEY"));
    let c = GitClient::new(f.options(f.key(Some(passphrase))));
    let out = c.sync(&f.url(), "main", &f.mirror()).await.unwrap();
    assert_eq!(out.commit, f.sha);
    assert_eq!(
        resolved_commit(&f.mirror(), "main").unwrap(),
        Some(f.sha.clone())
    );

    // A wrong passphrase is a configuration error that names the setting, not the secret.
    let wrong = "not-the-passphrase";
    let c = GitClient::new(f.options(f.key(Some(wrong))));
    let err = c.ls_remote(&f.url(), "main").await.unwrap_err();
    assert!(matches!(err, GitError::InvalidInput { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("SSH_PRIVATE_KEY_PASSPHRASE"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains(passphrase),
        "{text}"
    );

    // Without the passphrase ssh cannot use the key (BatchMode): an authentication error.
    let c = GitClient::new(f.options(f.key(None)));
    let err = c.ls_remote(&f.url(), "main").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
}

#[tokio::test]
async fn changed_host_key_is_refused_unless_allowed() {
    let mut f = Fixture::new("");
    let c = GitClient::new(f.options(f.key(None)));
    c.sync(&f.url(), "main", &f.mirror()).await.unwrap();
    let old_key = key_data(&f.sshd.host_public_key());

    f.sshd.restart_with_new_host_key();
    let new_key = key_data(&f.sshd.host_public_key());
    assert_ne!(old_key, new_key);
    f.work.commit_and_push("after the key change");
    let err = c.sync(&f.url(), "main", &f.mirror()).await.unwrap_err();
    assert!(err.is_auth() && !err.is_transport(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("host key of 127.0.0.1 changed"), "{text}");
    assert!(text.contains("SSH_ACCEPT_CHANGED_HOST_KEYS"), "{text}");
    assert!(text.contains("known_hosts"), "{text}");
    assert_eq!(
        resolved_commit(&f.mirror(), "main").unwrap(),
        Some(f.sha.clone())
    );
    assert!(f.known_hosts().contains(&old_key));
    assert!(!f.known_hosts().contains(&new_key));

    // The operator allows it: the recorded key is replaced and the sync goes through.
    let allowing = GitClient::new(GitOptions {
        ssh_accept_changed_host_keys: true,
        ..f.options(f.key(None))
    });
    let out = allowing.sync(&f.url(), "main", &f.mirror()).await.unwrap();
    assert!(out.fetched);
    assert!(f.known_hosts().contains(&new_key));
    assert!(!f.known_hosts().contains(&old_key));
    // And the plain client accepts the new key from now on.
    assert!(c.ls_remote(&f.url(), "main").await.is_ok());
}

#[tokio::test]
async fn user_provided_known_hosts_is_honoured() {
    let f = Fixture::new("");
    // A known_hosts line for this server with another key: refused, nothing learned.
    let other = tempfile::tempdir().unwrap();
    let other_key = keygen(&other.path().join("host"), "ed25519", "");
    let wrong_line = format!(
        "[127.0.0.1]:{} ssh-ed25519 {}",
        f.sshd.port(),
        key_data(&other_key)
    );
    let c = GitClient::new(GitOptions {
        ssh_known_hosts: Some(wrong_line),
        ..f.options(f.key(None))
    });
    let err = c.ls_remote(&f.url(), "main").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(
        !f.known_hosts()
            .contains(&key_data(&f.sshd.host_public_key()))
    );

    // Even allowing changed keys does not override the operator's own file.
    let c = GitClient::new(GitOptions {
        ssh_known_hosts: Some(format!(
            "[127.0.0.1]:{} ssh-ed25519 {}",
            f.sshd.port(),
            key_data(&other_key)
        )),
        ssh_accept_changed_host_keys: true,
        ..f.options(f.key(None))
    });
    assert!(c.ls_remote(&f.url(), "main").await.unwrap_err().is_auth());

    // The right line: trusted without recording anything.
    let c = GitClient::new(GitOptions {
        ssh_known_hosts: Some(f.sshd.known_hosts_line()),
        ..f.options(f.key(None))
    });
    assert_eq!(c.ls_remote(&f.url(), "main").await.unwrap(), f.sha);
    assert_eq!(f.known_hosts().trim(), "");
}
