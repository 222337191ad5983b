//! HTTP(S) authentication against a smart-HTTP server (`git http-backend`) on 127.0.0.1 that
//! requires a token: the right token clones, a wrong or missing one is an authentication error (not
//! "offline"), the token never appears in any process's argv, in the mirror or in logs; domain-scoped
//! credentials; GitHub App installation tokens minted against a local mock of the API.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use doco_git::{DomainAuth, GitClient, GitError, GitHubApp, GitOptions, HttpToken};
use doco_testkit::git::{BareRepo, WorkTree};
use doco_testkit::github_api::MockGitHubApi;
use doco_testkit::smart_http::SmartHttpServer;
use doco_testkit::{files_under, process_cmdlines};

const USER: &str = "deploy";
const TOKEN: &str = "tok-Sm4rt-http-5ecret-901";

/// `<root>/acme/doco-bare-XXX` with one commit, served by a server that requires `USER:TOKEN`.
struct Fixture {
    _root: tempfile::TempDir,
    bare: BareRepo,
    work: WorkTree,
    server: SmartHttpServer,
    url: String,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let bare = BareRepo::new_in(&root.path().join("acme"));
    let work = WorkTree::clone_from(&bare);
    work.write("compose.yaml", "services: {}\n");
    work.commit_and_push("first");
    let server = SmartHttpServer::start(root.path(), Some((USER, TOKEN)));
    let url = server.repo_url(bare.path());
    Fixture {
        _root: root,
        bare,
        work,
        server,
        url,
    }
}

fn client_with(token: Option<(&str, &str)>) -> GitClient {
    GitClient::new(GitOptions {
        http_token: token.map(|(u, t)| HttpToken {
            user: u.into(),
            token: t.into(),
        }),
        timeout: Duration::from_secs(60),
        ..GitOptions::default()
    })
}

fn mirror_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/mirror");
    (tmp, dir)
}

/// Captures everything doco-git and doco-process log at debug level while alive.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn token_clones_and_never_reaches_argv_disk_or_logs() {
    let f = fixture();
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{TOKEN}"));

    // Slow the server down so the git processes live long enough to be inspected.
    f.server.set_delay(Duration::from_millis(250));
    let stop = Arc::new(AtomicBool::new(false));
    let scanner = {
        let stop = Arc::clone(&stop);
        let port = f.server.port().to_string();
        let (token, basic) = (TOKEN.to_string(), basic.clone());
        std::thread::spawn(move || {
            let (mut seen_git, mut leaks) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for cmdline in process_cmdlines() {
                    if cmdline.contains("git") && cmdline.contains(&port) {
                        seen_git += 1;
                    }
                    if cmdline.contains(&token) || cmdline.contains(&basic) {
                        leaks.push(cmdline);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (seen_git, leaks)
        })
    };
    let c = client_with(Some((USER, TOKEN)));
    let (_tmp, dir) = mirror_dir();
    let first = c.sync(&f.url, "main", &dir).await.unwrap();
    assert!(first.cloned);
    f.work.write("more.txt", "x");
    let second_sha = f.work.commit_and_push("second");
    let second = c.sync(&f.url, "main", &dir).await.unwrap();
    assert_eq!(second.commit, second_sha);
    stop.store(true, Ordering::SeqCst);
    let (seen_git, leaks) = scanner.join().unwrap();
    assert!(
        seen_git > 0,
        "the scan never saw a git process talking to the server"
    );
    assert!(leaks.is_empty(), "token in argv: {leaks:?}");
    f.server.set_delay(Duration::ZERO);

    // The server saw the credentials...
    assert!(
        f.server
            .authorizations()
            .contains(&format!("Basic {basic}"))
    );
    // ...and nothing on disk or in the logs has them.
    for (path, bytes) in files_under(&dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(TOKEN) && !text.contains(&basic),
            "{}",
            path.display()
        );
    }
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    assert!(config.contains(&f.url), "{config}");

    // A wrong token: an authentication error, not a transport ("offline") one.
    let wrong = "wrong-t0ken-value-77";
    let err = client_with(Some((USER, wrong)))
        .sync(&f.url, "main", &dir)
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(!err.is_transport());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
    }
    // No token at all: the same.
    let (_tmp2, dir2) = mirror_dir();
    let err = client_with(None)
        .sync(&f.url, "main", &dir2)
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(!dir2.exists());

    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("running git"),
        "debug logs were captured: {logged}"
    );
    assert!(!logged.contains(TOKEN) && !logged.contains(&basic) && !logged.contains(wrong));
    drop(f.bare);
}

#[tokio::test]
async fn domain_credentials_beat_the_global_token() {
    let f = fixture();
    let domains = |domain: &str| {
        vec![DomainAuth {
            domains: vec![domain.to_string()],
            http_token: Some(HttpToken {
                user: USER.into(),
                token: TOKEN.into(),
            }),
            ..DomainAuth::default()
        }]
    };
    let client = |domain: &str| {
        GitClient::new(GitOptions {
            http_token: Some(HttpToken::new("global-wrong")),
            auth_domains: domains(domain),
            ..GitOptions::default()
        })
    };
    // An exact match for the server's host wins over the (wrong) global token.
    let (_tmp, dir) = mirror_dir();
    client("127.0.0.1")
        .sync(&f.url, "main", &dir)
        .await
        .unwrap();
    // An entry for another domain does not apply: the global token is used and rejected.
    let err = client("git.example.com")
        .ls_remote(&f.url, "main")
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    // Nor does a wildcard for other domains.
    let err = client("*.example.com")
        .ls_remote(&f.url, "main")
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err:?}");
}

/// The RSA public key (PKCS#1 DER) of a PEM private key, via `ssh-keygen -e -m PEM`.
fn public_key_der(private_key: &Path) -> Vec<u8> {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-e", "-m", "PEM", "-f"])
        .arg(private_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test]
async fn github_app_tokens_are_minted_and_cached() {
    let f = fixture();
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("app.pem");
    doco_testkit::sshd::keygen(&key_path, "rsa", "");
    let pem = std::fs::read_to_string(&key_path).unwrap();
    assert!(pem.contains("BEGIN RSA PRIVATE KEY"), "GitHub's key format");
    let api = MockGitHubApi::start(77, "ghs_minted");
    // The git server accepts the first token the mock will mint.
    f.server.set_credentials(Some(("oauth2", "ghs_minted-1")));
    let c = GitClient::new(GitOptions {
        github_app: Some(GitHubApp {
            app_id: "12345".into(),
            private_key: pem.clone(),
            installation_id: None,
        }),
        github_api_url: Some(api.url()),
        ..GitOptions::default()
    });
    let (_tmp, dir) = mirror_dir();
    c.sync(&f.url, "main", &dir).await.unwrap();
    let owner_repo = format!(
        "acme/{}",
        f.bare.path().file_name().unwrap().to_string_lossy()
    );
    let requests = api.requests();
    let paths: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("GET", format!("/repos/{owner_repo}/installation").as_str()),
            ("POST", "/app/installations/77/access_tokens"),
        ]
    );

    // The JWT is RS256, signed by the App's key, issued by the App ID, valid < 10 minutes.
    let jwt = requests[1]
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "12345");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 600, "{claims}");
    let signature = b64.decode(parts[2]).unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_der(&key_path),
    )
    .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
    .expect("the JWT signature verifies with the App's public key");

    // Quiet polls reuse the cached token and the installation: no API call.
    f.work.write("b.txt", "b");
    let newer = f.work.commit_and_push("second");
    assert_eq!(c.sync(&f.url, "main", &dir).await.unwrap().commit, newer);
    assert!(!c.sync(&f.url, "main", &dir).await.unwrap().fetched);
    assert_eq!(api.requests().len(), 2, "{:?}", api.requests());
    assert_eq!(api.minted(), 1);

    // A token close to its expiry is renewed before use.
    let c2 = GitClient::new(GitOptions {
        github_app: Some(GitHubApp {
            app_id: "12345".into(),
            private_key: pem,
            installation_id: Some(77),
        }),
        github_api_url: Some(api.url()),
        ..GitOptions::default()
    });
    api.set_validity(Duration::from_secs(30));
    f.server.set_credentials(None);
    c2.ls_remote(&f.url, "main").await.unwrap();
    c2.ls_remote(&f.url, "main").await.unwrap();
    assert_eq!(api.minted(), 3, "each call needed a fresh token");
    assert!(
        api.requests()[2..].iter().all(|r| r.method == "POST"),
        "a pinned installation needs no lookup"
    );

    // A rejected App (unknown installation) is an authentication error.
    let c3 = GitClient::new(GitOptions {
        github_app: Some(GitHubApp {
            app_id: "1".into(),
            private_key: std::fs::read_to_string(&key_path).unwrap(),
            installation_id: Some(999),
        }),
        github_api_url: Some(api.url()),
        ..GitOptions::default()
    });
    let err = c3.ls_remote(&f.url, "main").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    // An unreachable API is a transport error.
    let c4 = GitClient::new(GitOptions {
        github_app: Some(GitHubApp {
            app_id: "1".into(),
            private_key: std::fs::read_to_string(&key_path).unwrap(),
            installation_id: Some(77),
        }),
        github_api_url: Some("http://127.0.0.1:1".into()),
        ..GitOptions::default()
    });
    let err = c4.ls_remote(&f.url, "main").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    let _ = std::io::stdout().flush();
}

#[tokio::test]
async fn wrong_token_is_not_confused_with_a_missing_repository() {
    let f = fixture();
    let err = client_with(Some((USER, "nope")))
        .ls_remote(&format!("{}/missing.git", f.server.url()), "main")
        .await
        .unwrap_err();
    // The server asks for credentials before it says whether the repository exists.
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
}

#[tokio::test]
async fn http_proxy_is_used_for_git() {
    let f = fixture();
    // A proxy that refuses connections: git must go through it, so the call fails as a network error.
    let c = GitClient::new(GitOptions {
        http_token: Some(HttpToken {
            user: USER.into(),
            token: TOKEN.into(),
        }),
        http_proxy: Some("http://127.0.0.1:1".into()),
        ..GitOptions::default()
    });
    let err = c.ls_remote(&f.url, "main").await.unwrap_err();
    assert!(err.is_transport(), "{err:?}");
    let before = f.server.requests().len();
    assert_eq!(before, 0, "nothing reached the server directly");
    assert!(
        client_with(Some((USER, TOKEN)))
            .ls_remote(&f.url, "main")
            .await
            .is_ok()
    );
}
