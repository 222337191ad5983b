//! What can go wrong talking to a Git remote, sorted the way the daemon must react to it.
//!
//! The split that matters is transport (the remote is unreachable: keep enforcing the last known good
//! state, "offline") versus authentication (a configuration error, never "offline") versus "the thing
//! you asked for does not exist". git reports all of them as exit code 128 with an English message,
//! so [`classify`] reads the message (`LC_ALL=C` keeps it stable) from a table of real git and
//! server messages.

use std::path::PathBuf;

/// Errors from [`crate::GitClient`]. Every message names the (redacted) URL and never a token.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Network/server trouble: connect refused, DNS, timeout (including our own kill), TLS handshake,
    /// HTTP 5xx, connection reset, "remote end hung up unexpectedly" without an auth hint, ssh
    /// "Connection refused/timed out".
    #[error(
        "cannot reach the Git remote {url}: {detail} (network or server problem; the last fetched commit stays in use)"
    )]
    Transport { url: String, detail: String },
    /// Rejected credentials: HTTP 401/403, "Authentication failed", "could not read Username/Password
    /// ... terminal prompts disabled" (how git reports a rejected `http.extraHeader` token), ssh
    /// "Permission denied (publickey)", "Host key verification failed".
    #[error(
        "the Git remote {url} rejected the credentials: {detail} (check the access token, its user, or the SSH key and known hosts)"
    )]
    Auth { url: String, detail: String },
    /// The remote answered but has no such branch/tag/ref (or the commit does not exist after a fetch).
    #[error(
        "reference '{reference}' not found in {url}: no such branch, tag or commit on the remote"
    )]
    ReferenceNotFound { url: String, reference: String },
    /// The remote answered that there is no repository there (HTTP 404, "does not appear to be a git
    /// repository", missing local path).
    #[error("no Git repository at {url}: {detail} (check the repository URL)")]
    RepositoryNotFound { url: String, detail: String },
    /// A reference or URL refused before running git (starts with '-', contains "..", control
    /// characters, empty...).
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: String, reason: String },
    /// `dir` exists but is not a usable git repository: a directory in a mirror's place that is no
    /// repository, a checkout to adopt without `.git`, a mirror whose damage git reported (repaired
    /// by a clone beside it when the remote answers). Never deleted automatically.
    #[error(
        "{} is not a usable Git repository: {detail} (doco-cd does not delete it; repair or remove it by hand)",
        dir.display()
    )]
    BrokenCheckout { dir: PathBuf, detail: String },
    /// Anything else git reported (command, exit code, stderr), and process errors that are not timeouts.
    #[error("`{command}` failed: {detail}")]
    Failed { command: String, detail: String },
}

impl GitError {
    /// True for network and server trouble: the case in which the last known state is kept.
    pub fn is_transport(&self) -> bool {
        matches!(self, GitError::Transport { .. })
    }

    /// True when the remote rejected the credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, GitError::Auth { .. })
    }
}

/// The kind of failure a git error message describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Transport,
    Auth,
    RepositoryNotFound,
    ReferenceNotFound,
    BrokenCheckout,
    Other,
}

// Matched in this order against the lower-cased message, with quoted parts ('...', usually a URL or
// a path) replaced by '' so that a host called "ssl.example.com" cannot match a pattern.
const AUTH: &[&str] = &[
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "returned error: 401",
    "returned error: 403",
    "permission denied (publickey",
    "permission denied (password",
    "permission denied (keyboard-interactive",
    "permission denied, please try again",
    "host key verification failed",
    "remote host identification has changed",
    "no matching host key type found",
    "too many authentication failures",
    "http basic: access denied",
    "invalid username or password",
    "bad credentials",
];
const REPOSITORY_NOT_FOUND: &[&str] = &[
    "returned error: 404",
    "does not appear to be a git repository",
    "repository not found",
    "repository '' not found",
    "repository '' does not exist",
    "the project you were looking for could not be found",
    "no such repository",
];
const REFERENCE_NOT_FOUND: &[&str] = &[
    "couldn't find remote ref",
    "reference is not a tree",
    "not our ref",
    "not a valid object name",
    "unknown revision",
    "invalid reference",
    "bad revision",
    "failed to unpack tree object",
];
const BROKEN_CHECKOUT: &[&str] = &[
    "not a git repository (or any",
    "index file corrupt",
    "bad object head",
    "is corrupt",
    "your current branch appears to be broken",
    "bad config line",
    "index file smaller than expected",
    "bad index file",
    "index uses",
    "unknown repository format",
    "does not point to a valid object",
];
const TRANSPORT: &[&str] = &[
    "could not resolve host",
    "could not resolve hostname",
    "name or service not known",
    "temporary failure in name resolution",
    "failed to connect",
    "couldn't connect to server",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "timed out",
    "connection reset",
    "connection closed",
    "network is unreachable",
    "no route to host",
    "remote end hung up unexpectedly",
    "early eof",
    "rpc failed",
    "returned error: 5",
    "empty reply from server",
    "recv failure",
    "send failure",
    "operation too slow",
    "transfer closed",
    "unexpected disconnect",
    "broken pipe",
    "kex_exchange_identification",
    "ssl_connect",
    "ssl_error",
    "ssl routines",
    "ssl connect error",
    "ssl certificate problem",
    "openssl",
    "gnutls",
    "tls connection",
    "schannel",
    "server certificate verification failed",
    "handshake",
    "proxy",
    "could not read from remote repository",
    "unable to access",
];

/// Sorts a git error message (stderr) into a kind. Pure; see the table test below.
pub(crate) fn classify(stderr: &str) -> ErrorKind {
    let text = unquote(&stderr.to_ascii_lowercase());
    let has = |patterns: &[&str]| patterns.iter().any(|p| text.contains(p));
    if has(AUTH) {
        ErrorKind::Auth
    } else if has(REPOSITORY_NOT_FOUND) {
        ErrorKind::RepositoryNotFound
    } else if has(REFERENCE_NOT_FOUND) {
        ErrorKind::ReferenceNotFound
    } else if has(BROKEN_CHECKOUT) {
        ErrorKind::BrokenCheckout
    } else if has(TRANSPORT) {
        ErrorKind::Transport
    } else {
        ErrorKind::Other
    }
}

/// Replaces every `'...'` without whitespace inside (a URL, a path) by `''`; apostrophes in prose
/// ("couldn't", "don't") are left alone.
fn unquote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\'') {
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find('\'') {
            Some(end) if end > 0 && !after[..end].chars().any(char::is_whitespace) => {
                out.push('\'');
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// git's stderr boiled down for an error message: no hints, no boilerplate, one line, bounded.
pub(crate) fn summarize(stderr: &str) -> String {
    const BOILERPLATE: &[&str] = &[
        "please make sure you have the correct access rights",
        "and the repository exists.",
    ];
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("hint:"))
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            !BOILERPLATE.iter().any(|b| lower.starts_with(b))
        })
        .collect();
    let mut text = lines.join("; ");
    if text.is_empty() {
        text = "git printed no error message".to_string();
    }
    if text.len() > 800 {
        let mut cut = 800;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;

    // Real messages from git 2.4x (curl, OpenSSH and servers' `remote:` lines).
    const TABLE: &[(&str, ErrorKind)] = &[
        // Transport
        (
            "fatal: unable to access 'http://127.0.0.1:8766/': Failed to connect to 127.0.0.1 port 8766 after 0 ms: Couldn't connect to server",
            Transport,
        ),
        (
            "fatal: unable to access 'https://git.nohost.invalid/o/r.git/': Could not resolve host: git.nohost.invalid",
            Transport,
        ),
        (
            "fatal: unable to access 'https://git.example.com/o/r.git/': The requested URL returned error: 503",
            Transport,
        ),
        (
            "fatal: unable to access 'https://git.example.com/o/r.git/': The requested URL returned error: 502",
            Transport,
        ),
        (
            "error: RPC failed; curl 56 Recv failure: Connection reset by peer\nfatal: expected flush after ref listing",
            Transport,
        ),
        (
            "fatal: unable to access 'https://h/': Operation too slow. Less than 1000 bytes/sec transferred the last 30 seconds",
            Transport,
        ),
        (
            "fatal: unable to access 'https://h/': gnutls_handshake() failed: The TLS connection was non-properly terminated.",
            Transport,
        ),
        (
            "fatal: unable to access 'https://h/': server certificate verification failed. CAfile: none CRLfile: none",
            Transport,
        ),
        (
            "fatal: unable to access 'https://h/': OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to h:443",
            Transport,
        ),
        (
            "fatal: unable to access 'https://h/': Failed to connect to h port 443 after 130000 ms: Connection timed out",
            Transport,
        ),
        (
            "ssh: connect to host 127.0.0.1 port 2222: Connection refused\r\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.",
            Transport,
        ),
        (
            "ssh: Could not resolve hostname nohost: Name or service not known\r\nfatal: Could not read from remote repository.",
            Transport,
        ),
        (
            "ssh: connect to host 10.255.255.1 port 22: Connection timed out\r\nfatal: Could not read from remote repository.",
            Transport,
        ),
        (
            "kex_exchange_identification: read: Connection reset by peer\r\nConnection reset by 127.0.0.1 port 2222\r\nfatal: Could not read from remote repository.",
            Transport,
        ),
        ("fatal: the remote end hung up unexpectedly", Transport),
        (
            "error: 1234 bytes of body are still expected\nfetch-pack: unexpected disconnect while reading sideband packet\nfatal: early EOF\nfatal: fetch-pack: invalid index-pack output",
            Transport,
        ),
        (
            "fatal: unable to access 'https://h/': Empty reply from server",
            Transport,
        ),
        // Auth
        (
            "fatal: could not read Username for 'https://git.example.com': terminal prompts disabled",
            Auth,
        ),
        (
            "fatal: could not read Password for 'https://oauth2@git.example.com': terminal prompts disabled",
            Auth,
        ),
        (
            "remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://gitlab.com/o/r.git/'",
            Auth,
        ),
        (
            "remote: Invalid username or password.\nfatal: Authentication failed for 'https://github.com/o/r.git/'",
            Auth,
        ),
        (
            "fatal: unable to access 'https://h/o/r.git/': The requested URL returned error: 403",
            Auth,
        ),
        (
            "fatal: unable to access 'https://h/o/r.git/': The requested URL returned error: 401",
            Auth,
        ),
        (
            "git@github.com: Permission denied (publickey).\r\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.",
            Auth,
        ),
        (
            "Host key verification failed.\r\nfatal: Could not read from remote repository.",
            Auth,
        ),
        (
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
            Auth,
        ),
        // Repository not found
        (
            "fatal: repository 'http://127.0.0.1:8765/nope/' not found",
            RepositoryNotFound,
        ),
        (
            "remote: Repository not found.\nfatal: repository 'https://github.com/o/missing.git/' not found",
            RepositoryNotFound,
        ),
        (
            "fatal: '/nonexist' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.",
            RepositoryNotFound,
        ),
        (
            "fatal: repository '/nonexist' does not exist",
            RepositoryNotFound,
        ),
        (
            "fatal: unable to access 'https://h/x/': The requested URL returned error: 404",
            RepositoryNotFound,
        ),
        (
            "remote: \nremote: ========================================================================\nremote: \nremote: ERROR: The project you were looking for could not be found or you don't have permission to view it.\nfatal: Could not read from remote repository.",
            RepositoryNotFound,
        ),
        // Reference not found
        (
            "fatal: couldn't find remote ref refs/heads/nope",
            ReferenceNotFound,
        ),
        (
            "fatal: reference is not a tree: 0123456789012345678901234567890123456789",
            ReferenceNotFound,
        ),
        (
            "error: Server does not allow request for unadvertised object 0123456789012345678901234567890123456789\nfatal: remote error: upload-pack: not our ref 0123456789012345678901234567890123456789",
            ReferenceNotFound,
        ),
        (
            "fatal: failed to unpack tree object 0123456789abcdef0123456789abcdef01234567",
            ReferenceNotFound,
        ),
        // Broken checkout
        (
            "fatal: not a git repository (or any of the parent directories): .git",
            BrokenCheckout,
        ),
        (
            "error: bad signature 0x00000000\nfatal: index file corrupt",
            BrokenCheckout,
        ),
        (
            "fatal: .git/index: index file smaller than expected",
            BrokenCheckout,
        ),
        (
            "fatal: bad config line 1 in file .git/config",
            BrokenCheckout,
        ),
        // Other
        (
            "fatal: Unable to create '/data/r/.git/index.lock': File exists.",
            Other,
        ),
        (
            "error: Your local changes to the following files would be overwritten by checkout",
            Other,
        ),
        ("", Other),
    ];

    #[test]
    fn classifies_real_git_messages() {
        for (stderr, want) in TABLE {
            assert_eq!(classify(stderr), *want, "{stderr}");
        }
    }

    #[test]
    fn quoted_urls_do_not_match_patterns() {
        let msg = "fatal: unable to create 'https://ssl-proxy.example.com/handshake': nope";
        assert_eq!(classify(msg), Other);
        // Apostrophes in prose keep their text.
        assert_eq!(
            classify("fatal: it's a connection refused, isn't it"),
            Transport
        );
        assert_eq!(unquote("a 'x' b 'c d' e"), "a '' b 'c d' e");
    }

    #[test]
    fn messages_name_the_url_and_the_reference() {
        let e = GitError::ReferenceNotFound {
            url: "https://h/o/r.git".into(),
            reference: "v9".into(),
        };
        assert_eq!(
            e.to_string(),
            "reference 'v9' not found in https://h/o/r.git: no such branch, tag or commit on the remote"
        );
        let e = GitError::Transport {
            url: "https://h/o/r.git".into(),
            detail: "git ls-remote for 'main': fatal: unable to access ''".into(),
        };
        assert!(e.is_transport() && !e.is_auth());
        assert!(
            e.to_string()
                .starts_with("cannot reach the Git remote https://h/o/r.git: ")
        );
        let e = GitError::Auth {
            url: "u".into(),
            detail: "d".into(),
        };
        assert!(e.is_auth() && !e.is_transport());
        assert!(e.to_string().contains("check the access token"));
    }

    #[test]
    fn summarize_drops_hints_and_boilerplate() {
        let s = summarize(
            "hint: use --force\nfatal: '/x' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n",
        );
        assert_eq!(
            s,
            "fatal: '/x' does not appear to be a git repository; fatal: Could not read from remote repository."
        );
        assert_eq!(summarize(""), "git printed no error message");
        assert!(summarize(&"é".repeat(1000)).len() <= 804);
    }
}
