//! `SOURCE_URL_REWRITES`: rewriting the Git URL of a poll or webhook before cloning.
//!
//! The typical use is a Git server reached through a public name in webhooks and `POLL_CONFIG`
//! but through an internal name from doco-cd's network (`https://git.example.com/` →
//! `http://forgejo:3000/`). Rules are tried longest key first (ties by key, for a deterministic
//! order). A key matches either as a plain prefix of the URL (`https://host/`, `git@host:`) or as
//! a host (`host`, or `host:port` to require that port) of a standard URL or of an SCP-style
//! `user@host:path` URL; in a host match only the host (and the target's scheme and user, when
//! the target is a URL) change, the path is kept. Keys are compared lower-cased, as upstream
//! loads them.

use std::collections::BTreeMap;

use crate::poll::normalize_git_url;

/// Applies the first matching rule to `url`. `None` when no rule applies. The result is
/// normalized like any Git URL (an absolute path becomes a `file://` URL).
pub fn rewrite_source_url(rules: &BTreeMap<String, String>, url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() {
        return None;
    }
    let mut ordered: Vec<(String, &str)> = rules
        .iter()
        .map(|(key, target)| (normalize_key(key), target.trim()))
        .filter(|(key, target)| !key.is_empty() && !target.is_empty())
        .collect();
    ordered.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    ordered.into_iter().find_map(|(key, target)| {
        let rewritten = match url.strip_prefix(key.as_str()) {
            Some(rest) => Some(format!("{target}{rest}")),
            None => rewrite_host(url, &key, target),
        };
        rewritten.map(|u| normalize_git_url(&u))
    })
}

fn normalize_key(key: &str) -> String {
    key.trim().to_ascii_lowercase()
}

/// Whether a host (`hostname`, or `host_with_port` when the rule names a port) matches `rule`.
/// A rule containing `/` or `@` is a prefix rule, never a host rule.
fn hosts_match(hostname: &str, host_with_port: &str, rule: &str) -> bool {
    let rule = normalize_key(rule);
    if rule.is_empty() || rule.contains(['/', '@']) {
        return false;
    }
    if rule.contains(':') {
        normalize_key(host_with_port) == rule
    } else {
        normalize_key(hostname) == rule
    }
}

/// `scheme://[userinfo@]host[:port]<tail>`, split.
struct StandardUrl<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    tail: &'a str,
}

impl<'a> StandardUrl<'a> {
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return None;
        }
        Some(StandardUrl {
            scheme,
            userinfo,
            host,
            tail,
        })
    }

    /// The host without its port (`[::1]:22` → `::1`).
    fn hostname(&self) -> &'a str {
        if let Some(inner) = self.host.strip_prefix('[') {
            return inner.split(']').next().unwrap_or(inner);
        }
        match self.host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => self.host,
        }
    }
}

fn rewrite_host(url: &str, rule: &str, target: &str) -> Option<String> {
    match StandardUrl::parse(url) {
        Some(parsed) => rewrite_standard(&parsed, rule, target),
        None => rewrite_scp(url, rule, target),
    }
}

fn rewrite_standard(url: &StandardUrl<'_>, rule: &str, target: &str) -> Option<String> {
    if !hosts_match(url.hostname(), url.host, rule) {
        return None;
    }
    let (scheme, userinfo, host) = match StandardUrl::parse(target) {
        // A URL target: its scheme, user (if any) and host replace the source's.
        Some(t) => (t.scheme, t.userinfo.or(url.userinfo), t.host),
        // A bare `host[:port]` target replaces the host only.
        None => (url.scheme, url.userinfo, target),
    };
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    Some(format!("{scheme}://{user}{host}{}", url.tail))
}

/// `user@host:path` (SCP syntax, no `://`).
fn rewrite_scp(url: &str, rule: &str, target: &str) -> Option<String> {
    if url.contains("://") {
        return None;
    }
    let at = url.find('@')?;
    let colon = url.find(':')?;
    if at == 0 || colon <= at + 1 {
        return None;
    }
    let user = &url[..at];
    let host = &url[at + 1..colon];
    let path = &url[colon + 1..];
    if path.is_empty() || !hosts_match(host, host, rule) {
        return None;
    }
    let (user, host) = match StandardUrl::parse(target) {
        Some(t) => (
            t.userinfo
                .map(|u| u.split(':').next().unwrap_or(u))
                .unwrap_or(user),
            t.host,
        ),
        None => match target.split_once('@') {
            Some((u, h)) if !u.trim().is_empty() => (u.trim(), h.trim()),
            Some((_, h)) => (user, h.trim()),
            None => (user, target),
        },
    };
    if host.is_empty() {
        return None;
    }
    Some(format!("{user}@{host}:{path}"))
}
