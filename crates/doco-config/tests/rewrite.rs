//! `SOURCE_URL_REWRITES`: upstream's cases (handler_webhook_source_test.go) plus host:port,
//! SCP host rules, key case, ordering and non-matches.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use doco_config::rewrite_source_url;

fn rules(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn table() {
    /// (case, rules, url, expected)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
    let cases: &[Case] = &[
        (
            "rewrites by URL prefix",
            &[("https://forgejo.example.com/", "http://forgejo:3000/")],
            "https://forgejo.example.com/org/repo.git",
            Some("http://forgejo:3000/org/repo.git"),
        ),
        (
            "rewrites by domain host",
            &[("forgejo.example.com", "forgejo:3000")],
            "https://forgejo.example.com/org/repo.git",
            Some("https://forgejo:3000/org/repo.git"),
        ),
        (
            "rewrites scp URL by prefix",
            &[("git@forgejo.example.com:", "git@forgejo.internal:")],
            "git@forgejo.example.com:org/repo.git",
            Some("git@forgejo.internal:org/repo.git"),
        ),
        (
            "more specific (longer) rule wins",
            &[
                ("forgejo.example.com", "forgejo:3000"),
                ("https://forgejo.example.com/", "http://forgejo:3000/"),
            ],
            "https://forgejo.example.com/org/repo.git",
            Some("http://forgejo:3000/org/repo.git"),
        ),
        (
            "longest prefix wins among prefixes",
            &[
                ("https://git.example.com/", "https://a/"),
                ("https://git.example.com/team/", "https://b/"),
            ],
            "https://git.example.com/team/repo.git",
            Some("https://b/repo.git"),
        ),
        (
            "no rule matches",
            &[("forgejo.example.com", "forgejo:3000")],
            "https://github.com/org/repo.git",
            None,
        ),
        ("no rules", &[], "https://github.com/org/repo.git", None),
        (
            "rewrite to an absolute local path becomes a file URL",
            &[("https://forgejo.example.com/", "/local-repos/")],
            "https://forgejo.example.com/org/repo.git",
            Some("file:///local-repos/org/repo.git"),
        ),
        (
            "keys are lower-cased (host match is case-insensitive)",
            &[("Forgejo.Example.COM", "forgejo:3000")],
            "https://FORGEJO.example.com/org/repo.git",
            Some("https://forgejo:3000/org/repo.git"),
        ),
        (
            "host rule without port matches any port",
            &[("git.example.com", "git.internal")],
            "https://git.example.com:8443/o/r.git",
            Some("https://git.internal/o/r.git"),
        ),
        (
            "host:port rule needs that port",
            &[("git.example.com:8443", "git.internal:3000")],
            "https://git.example.com:8443/o/r.git",
            Some("https://git.internal:3000/o/r.git"),
        ),
        (
            "host:port rule does not match another port",
            &[("git.example.com:8443", "git.internal:3000")],
            "https://git.example.com/o/r.git",
            None,
        ),
        (
            "host rule with a URL target takes its scheme",
            &[("git.example.com", "http://forgejo:3000")],
            "https://git.example.com/o/r.git",
            Some("http://forgejo:3000/o/r.git"),
        ),
        (
            "the source's user is kept by a host rewrite",
            &[("git.example.com", "git.internal")],
            "ssh://git@git.example.com/o/r.git",
            Some("ssh://git@git.internal/o/r.git"),
        ),
        (
            "host rule on an SCP URL",
            &[("git.example.com", "git.internal")],
            "git@git.example.com:o/r.git",
            Some("git@git.internal:o/r.git"),
        ),
        (
            "host rule on an SCP URL with a user in the target",
            &[("git.example.com", "deploy@git.internal")],
            "git@git.example.com:o/r.git",
            Some("deploy@git.internal:o/r.git"),
        ),
        (
            "host rule on an SCP URL with a URL target",
            &[("git.example.com", "ssh://other@git.internal:2222")],
            "git@git.example.com:o/r.git",
            Some("other@git.internal:2222:o/r.git"),
        ),
        (
            "a rule with a slash is a prefix rule only",
            &[("git.example.com/o", "x")],
            "https://git.example.com/o/r.git",
            None,
        ),
        (
            "a subdomain is not the host",
            &[("example.com", "internal")],
            "https://git.example.com/o/r.git",
            None,
        ),
        (
            "empty targets are skipped",
            &[("git.example.com", "  ")],
            "https://git.example.com/o/r.git",
            None,
        ),
        (
            "surrounding blanks of the URL are ignored",
            &[("https://a/", "https://b/")],
            "  https://a/r.git ",
            Some("https://b/r.git"),
        ),
        (
            "an empty URL is never rewritten",
            &[("https://a/", "https://b/")],
            "",
            None,
        ),
    ];
    for (name, pairs, url, expected) in cases {
        assert_eq!(
            rewrite_source_url(&rules(pairs), url).as_deref(),
            *expected,
            "{name}"
        );
    }
}

#[test]
fn equal_length_keys_are_tried_in_a_fixed_order() {
    let r = rules(&[("aaa.example", "x.internal"), ("https://b/", "https://c/")]);
    for _ in 0..20 {
        assert_eq!(
            rewrite_source_url(&r, "https://aaa.example/r.git").as_deref(),
            Some("https://x.internal/r.git")
        );
    }
}
