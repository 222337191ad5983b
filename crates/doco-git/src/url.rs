//! Remote URLs: which forms we accept, how credentials are taken out of them, and the names derived
//! from them.
//!
//! A URL reaches git only after [`Remote::parse`] accepted it and removed any `user:password@`, so the
//! password never appears in argv, in `.git/config` or in a log line; the password travels as an
//! `http.extraHeader` instead (see `command.rs`). [`repo_name`] and [`full_name`] reproduce upstream's
//! `GetRepoName` / `GetFullName`, because those names appear in paths, labels and API routes that
//! must stay compatible.

use crate::{GitError, HttpToken};

/// The transport a URL uses; decides whether a token applies (and, later, SSH options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `http://` or `https://`.
    Http,
    /// `ssh://`.
    Ssh,
    /// scp-like `user@host:path`.
    Scp,
    /// `file://`.
    File,
    /// An absolute local path.
    LocalPath,
}

/// A validated remote URL, split into what git may see and what it may not.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// The URL without a password: what git is given and what `.git/config` stores.
    pub clean: String,
    /// Safe to log and to put into errors (same as `clean`).
    pub display: String,
    pub scheme: Scheme,
    /// Credentials found in the URL (`https://user:pw@host/...`), used like a token.
    pub url_credentials: Option<HttpToken>,
    /// Raw text that must be redacted from anything git prints (userinfo as written in the URL).
    pub url_secrets: Vec<String>,
}

impl Remote {
    /// Accepts `https://`, `http://`, `ssh://`, scp-like `user@host:path`, `file://` and absolute
    /// local paths; refuses everything else before git runs.
    pub fn parse(url: &str) -> Result<Remote, GitError> {
        let invalid = |reason: &str| GitError::InvalidInput {
            what: format!("repository URL '{}'", redact_url(url)),
            reason: reason.to_string(),
        };
        if url.is_empty() {
            return Err(invalid("it is empty"));
        }
        if url.trim() != url {
            return Err(invalid("it has leading or trailing whitespace"));
        }
        if url.chars().any(char::is_control) {
            return Err(invalid("it contains control characters"));
        }
        if url.starts_with('-') {
            return Err(invalid("it starts with '-'"));
        }
        let scheme = scheme_of(url).ok_or_else(|| {
            invalid(
                "use https://, http://, ssh://, file://, user@host:path or an absolute local path",
            )
        })?;
        let mut url_credentials = None;
        let mut url_secrets = Vec::new();
        let clean = match scheme {
            Scheme::Http => {
                let parts = split_authority(url).ok_or_else(|| invalid("it has no host"))?;
                if parts.host.is_empty() {
                    return Err(invalid("it has no host"));
                }
                if let Some(userinfo) = parts.userinfo {
                    url_secrets.push(userinfo.to_string());
                    let (user, password) = match userinfo.split_once(':') {
                        Some((u, p)) => (percent_decode(u), percent_decode(p)),
                        None => (percent_decode(userinfo), String::new()),
                    };
                    for s in [&user, &password] {
                        if !s.is_empty() {
                            url_secrets.push(s.clone());
                        }
                    }
                    url_credentials = Some(HttpToken {
                        user,
                        token: password,
                    });
                }
                format!("{}{}{}", parts.scheme, parts.host, parts.rest)
            }
            Scheme::Ssh => {
                let parts = split_authority(url).ok_or_else(|| invalid("it has no host"))?;
                if parts.host.is_empty() {
                    return Err(invalid("it has no host"));
                }
                match parts.userinfo.map(|u| u.split_once(':')) {
                    // A password in an ssh URL is never used (keys only); keep the user, drop it.
                    Some(Some((user, password))) => {
                        url_secrets.push(password.to_string());
                        format!("{}{user}@{}{}", parts.scheme, parts.host, parts.rest)
                    }
                    _ => url.to_string(),
                }
            }
            Scheme::Scp | Scheme::File | Scheme::LocalPath => url.to_string(),
        };
        Ok(Remote {
            display: clean.clone(),
            clean,
            scheme,
            url_credentials,
            url_secrets,
        })
    }
}

impl Remote {
    /// The host (lower case, no trailing dot, IPv6 without brackets) and the port written in the
    /// URL, for credential lookup, known_hosts entries and URL-scoped git config. `None` for local
    /// repositories.
    pub fn host_port(&self) -> Option<(String, Option<u16>)> {
        let authority = match self.scheme {
            Scheme::Http | Scheme::Ssh => split_authority(&self.clean)?.host.to_string(),
            Scheme::Scp => {
                let after_at = self.clean.split_once('@')?.1;
                match after_at.strip_prefix('[') {
                    // git's `user@[host:port]:path`, or `user@[ipv6]:path`.
                    Some(rest) => {
                        let inside = rest.split_once(']')?.0;
                        return match inside.rsplit_once(':') {
                            Some((h, p)) if !h.contains(':') => {
                                Some((h.to_ascii_lowercase(), p.parse().ok()))
                            }
                            _ => Some((inside.to_ascii_lowercase(), None)),
                        };
                    }
                    None => after_at.split_once(':')?.0.to_string(),
                }
            }
            Scheme::File | Scheme::LocalPath => return None,
        };
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            (
                h.to_string(),
                after.strip_prefix(':').and_then(|p| p.parse().ok()),
            )
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) if self.scheme != Scheme::Scp => (h.to_string(), p.parse().ok()),
                _ => (authority.clone(), None),
            }
        };
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        (!host.is_empty()).then_some((host, port))
    }

    /// `scheme://host[:port]/` of an HTTP(S) remote: the prefix that scopes an `http.<url>.*`
    /// setting to this server, so a token is never sent to another host (a submodule elsewhere).
    pub fn http_scope(&self) -> Option<String> {
        if self.scheme != Scheme::Http {
            return None;
        }
        let parts = split_authority(&self.clean)?;
        Some(format!(
            "{}{}/",
            parts.scheme.to_ascii_lowercase(),
            parts.host
        ))
    }
}

fn scheme_of(url: &str) -> Option<Scheme> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Some(Scheme::Http);
    }
    if lower.starts_with("ssh://") {
        return Some(Scheme::Ssh);
    }
    if lower.starts_with("file://") {
        return Some(Scheme::File);
    }
    if url.contains("://") || url.contains("::") {
        return None;
    }
    if url.starts_with('/') {
        return Some(Scheme::LocalPath);
    }
    // scp-like: user@host:path, where the part before the first ':' has no '/'.
    let (before, path) = url.split_once(':')?;
    let (user, host) = before.split_once('@')?;
    if user.is_empty() || host.is_empty() || path.is_empty() || before.contains('/') {
        return None;
    }
    Some(Scheme::Scp)
}

struct Authority<'a> {
    /// `https://` as written.
    scheme: &'a str,
    userinfo: Option<&'a str>,
    /// host and optional port.
    host: &'a str,
    /// path, query and fragment.
    rest: &'a str,
}

fn split_authority(url: &str) -> Option<Authority<'_>> {
    let idx = url.find("://")? + 3;
    let (scheme, after) = url.split_at(idx);
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    Some(Authority {
        scheme,
        userinfo,
        host,
        rest,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL with any `user:password@` removed, safe to log, store and put into labels.
///
/// For `http(s)://` and `file://` the whole userinfo goes. For `ssh://` only a password is removed:
/// the user name is not a secret and is part of where to log in (`ssh://git@host/...`). scp-like
/// `git@host:path` and local paths are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let Some(parts) = split_authority(url) else {
        return url.to_string();
    };
    let Some(userinfo) = parts.userinfo else {
        return url.to_string();
    };
    if lower.starts_with("ssh://") {
        return match userinfo.split_once(':') {
            Some((user, _)) => format!("{}{user}@{}{}", parts.scheme, parts.host, parts.rest),
            None => url.to_string(),
        };
    }
    format!("{}{}{}", parts.scheme, parts.host, parts.rest)
}

/// Upstream's `GetRepoName`: `host/owner/repo` for https/http/ssh/scp-like URLs (userinfo, `.git`,
/// query and fragment stripped); for `file://` URLs and absolute local paths, the path without its
/// leading `/`.
pub fn repo_name(url: &str) -> String {
    let u = url.trim();
    if u.is_empty() {
        return String::new();
    }
    // scp-like: git@host:owner/repo(.git)
    if u.contains('@')
        && u.contains(':')
        && !u.contains("://")
        && let Some((_, host_and_path)) = u.split_once('@')
        && let Some((host, path)) = host_and_path.split_once(':')
    {
        return format!(
            "{host}/{}",
            normalize_owner_repo(path.trim_start_matches('/'))
        );
    }
    if u.to_ascii_lowercase().starts_with("file://")
        && let Some(parts) = split_authority(u)
    {
        return normalize_owner_repo(parts.rest.trim_start_matches('/'));
    }
    if let Some(parts) = split_authority(u)
        && !parts.host.is_empty()
    {
        let path = parts.rest.split(['?', '#']).next().unwrap_or("");
        return format!(
            "{}/{}",
            parts.host,
            normalize_owner_repo(path.trim_start_matches('/'))
        );
    }
    if let Some(path) = u.strip_prefix('/') {
        return normalize_owner_repo(path.trim_start_matches('/'));
    }
    normalize_owner_repo(u)
}

/// Upstream's `GetFullName`: [`repo_name`] without its first segment (`owner/repo`), or the last
/// segment when there are only two.
pub fn full_name(url: &str) -> String {
    let name = repo_name(url);
    let parts: Vec<&str> = name.split('/').collect();
    match parts.len() {
        0 | 1 => name,
        2 => parts[1].to_string(),
        _ => parts[1..].join("/"),
    }
}

/// Upstream's `normalizeOwnerRepo`: cut at `?`/`#`, drop a trailing `.git`, then clean the path.
fn normalize_owner_repo(p: &str) -> String {
    let p = p.split(['?', '#']).next().unwrap_or("");
    let p = p.strip_suffix(".git").unwrap_or(p);
    clean_path(p)
}

/// Go's `path.Clean`: collapse `//`, drop `.`, resolve `..`, no trailing `/`; empty becomes `.`.
fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // From upstream internal/git/git_test.go TestGetRepoName and names_test.go TestGetFullName.
    const NAMES: &[(&str, &str, &str)] = &[
        (
            "https://github.com/kimdre/doco-cd_tests.git",
            "github.com/kimdre/doco-cd_tests",
            "kimdre/doco-cd_tests",
        ),
        (
            "https://user:password@github.com/kimdre/doco-cd_tests.git",
            "github.com/kimdre/doco-cd_tests",
            "kimdre/doco-cd_tests",
        ),
        (
            "http://git.example.com/doco-cd.git",
            "git.example.com/doco-cd",
            "doco-cd",
        ),
        (
            "git@github.com:kimdre/doco-cd_tests.git",
            "github.com/kimdre/doco-cd_tests",
            "kimdre/doco-cd_tests",
        ),
        (
            "ssh://git@github.com/kimdre/doco-cd_tests.git",
            "github.com/kimdre/doco-cd_tests",
            "kimdre/doco-cd_tests",
        ),
        (
            "ssh://github.com/kimdre/doco-cd_tests.git",
            "github.com/kimdre/doco-cd_tests",
            "kimdre/doco-cd_tests",
        ),
        (
            "https://oauth2:TOKEN@github.com/kimdre/doco-cd_tests.git",
            "github.com/kimdre/doco-cd_tests",
            "kimdre/doco-cd_tests",
        ),
        (
            "http://git.example.com/infra/alpha/local/netbird-doco.git",
            "git.example.com/infra/alpha/local/netbird-doco",
            "infra/alpha/local/netbird-doco",
        ),
        (
            "git@gitlab.com:gitlab-org/5-minute-production-app/sandbox/cats.git",
            "gitlab.com/gitlab-org/5-minute-production-app/sandbox/cats",
            "gitlab-org/5-minute-production-app/sandbox/cats",
        ),
        (
            "https://gitlab.com/gitlab-org/5-minute-production-app/sandbox/cats.git",
            "gitlab.com/gitlab-org/5-minute-production-app/sandbox/cats",
            "gitlab-org/5-minute-production-app/sandbox/cats",
        ),
        (
            "file:///data/local-repos/my-app",
            "data/local-repos/my-app",
            "local-repos/my-app",
        ),
        (
            "file:///data/local-repos/my-app.git",
            "data/local-repos/my-app",
            "local-repos/my-app",
        ),
        ("file:///my-app", "my-app", "my-app"),
        // Beyond upstream's table.
        (
            "https://git.example.com:8443/o/r.git?x=1#frag",
            "git.example.com:8443/o/r",
            "o/r",
        ),
        ("/srv/git/app.git", "srv/git/app", "git/app"),
        ("https://host//o//r/.git", "host/o/r", "o/r"),
        ("", "", ""),
    ];

    #[test]
    fn repo_name_and_full_name_match_upstream() {
        for (url, repo, full) in NAMES {
            assert_eq!(repo_name(url), *repo, "repo_name({url})");
            assert_eq!(full_name(url), *full, "full_name({url})");
        }
    }

    #[test]
    fn redact_url_removes_userinfo() {
        let cases = [
            (
                "https://oauth2:TOKEN@github.com/o/r.git",
                "https://github.com/o/r.git",
            ),
            ("http://user@host:8080/r", "http://host:8080/r"),
            ("https://github.com/o/r.git", "https://github.com/o/r.git"),
            ("https://u:p%40ss@h/r?q=a@b", "https://h/r?q=a@b"),
            ("ssh://git:pw@host/r.git", "ssh://git@host/r.git"),
            ("ssh://git@host:22/r.git", "ssh://git@host:22/r.git"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("file:///srv/r.git", "file:///srv/r.git"),
            ("/srv/r.git", "/srv/r.git"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn parse_accepts_supported_forms() {
        let ok = [
            ("https://h/o/r.git", Scheme::Http),
            ("HTTP://h/o/r", Scheme::Http),
            ("ssh://git@h:2222/o/r.git", Scheme::Ssh),
            ("git@github.com:o/r.git", Scheme::Scp),
            ("file:///srv/r.git", Scheme::File),
            ("/srv/r.git", Scheme::LocalPath),
        ];
        for (url, scheme) in ok {
            let remote = Remote::parse(url).unwrap();
            assert_eq!(remote.scheme, scheme, "{url}");
            assert_eq!(remote.clean, url);
            assert!(remote.url_credentials.is_none());
        }
    }

    #[test]
    fn parse_refuses_everything_else() {
        let bad = [
            "",
            " https://h/r",
            "-uhttps://h/r",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "git://h/r.git",
            "ftp://h/r",
            "relative/path",
            "host:path",
            "https://h/r\n",
            "https:///nohost",
        ];
        for url in bad {
            let err = Remote::parse(url).unwrap_err();
            assert!(matches!(err, GitError::InvalidInput { .. }), "{url}: {err}");
        }
    }

    #[test]
    fn parse_takes_credentials_out_of_http_urls() {
        let remote = Remote::parse("https://bob:s3cr%40t@git.example.com/o/r.git").unwrap();
        assert_eq!(remote.clean, "https://git.example.com/o/r.git");
        let creds = remote.url_credentials.unwrap();
        assert_eq!(creds.user, "bob");
        assert_eq!(creds.token, "s3cr@t");
        assert!(remote.url_secrets.contains(&"s3cr@t".to_string()));
        assert!(remote.url_secrets.contains(&"bob:s3cr%40t".to_string()));

        let ssh = Remote::parse("ssh://git:pw@h/r.git").unwrap();
        assert_eq!(ssh.clean, "ssh://git@h/r.git");
        assert!(ssh.url_credentials.is_none());
    }

    #[test]
    fn host_port_and_scope() {
        let hp = |u: &str| Remote::parse(u).unwrap().host_port();
        assert_eq!(
            hp("https://Git.Example.com./o/r"),
            Some(("git.example.com".into(), None))
        );
        assert_eq!(
            hp("http://u:p@127.0.0.1:8080/r"),
            Some(("127.0.0.1".into(), Some(8080)))
        );
        assert_eq!(
            hp("ssh://git@h:2222/o/r.git"),
            Some(("h".into(), Some(2222)))
        );
        assert_eq!(hp("ssh://git@[::1]:22/r"), Some(("::1".into(), Some(22))));
        assert_eq!(
            hp("git@github.com:o/r.git"),
            Some(("github.com".into(), None))
        );
        assert_eq!(
            hp("root@[127.0.0.1:2222]:/srv/r.git"),
            Some(("127.0.0.1".into(), Some(2222)))
        );
        assert_eq!(hp("file:///srv/r"), None);
        assert_eq!(
            Remote::parse("HTTPS://u:p@h:8443/o/r")
                .unwrap()
                .http_scope()
                .as_deref(),
            Some("https://h:8443/")
        );
        assert_eq!(Remote::parse("git@h:o/r").unwrap().http_scope(), None);
    }

    #[test]
    fn clean_path_matches_go() {
        let cases = [
            ("", "."),
            ("a/b/", "a/b"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
        ];
        for (p, want) in cases {
            assert_eq!(clean_path(p), want, "{p}");
        }
    }
}
