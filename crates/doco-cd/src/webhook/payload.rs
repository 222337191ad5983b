//! The push payloads upstream understands, read into one shape: GitHub's (also sent by Gitea, Gogs
//! and Forgejo) and GitLab's. A request signed only with Forgejo's own headers
//! (`X-Forgejo-Signature`, `X-Forgejo-Event`) is read like Gitea's, whose payload Forgejo sends;
//! upstream verifies it and then fails with 500 "failed to parse payload". Fields are read as upstream's decoder reads them: unknown keys are ignored, a
//! missing or `null` field is empty. Also the deletion test: a push that deletes a branch or tag is
//! answered 202 and skipped.
//!
//! Pure: bytes in, data out.

use serde::Deserialize;

use super::verify::Provider;

/// A webhook payload reduced to what a deploy needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The pushed reference (`refs/heads/main`, `refs/tags/v1`).
    pub reference: String,
    /// `branch` or `tag` (GitHub-like `create`/`delete` events only).
    pub ref_type: String,
    /// The commit before the push.
    pub before: String,
    /// The commit after the push.
    pub after: String,
    /// The commit the push points to (`after` for GitHub-like, `checkout_sha` for GitLab).
    pub commit: String,
    /// The short repository name.
    pub name: String,
    /// `owner/repo` (GitLab: `path_with_namespace`).
    pub full_name: String,
    /// The HTTP(S) clone URL.
    pub clone_url: String,
    /// The SSH clone URL.
    pub ssh_url: String,
    /// The web page of the repository.
    pub web_url: String,
    /// Whether the repository is private (GitLab: `visibility_level` 0).
    pub private: bool,
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is not the JSON the provider sends.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// No payload of this provider is understood (OCI registry notifications).
    #[error("failed to parse payload")]
    Unsupported,
}

#[derive(Deserialize, Default)]
struct GithubPush {
    #[serde(rename = "ref")]
    reference: Option<String>,
    ref_type: Option<String>,
    before: Option<String>,
    after: Option<String>,
    repository: Option<GithubRepository>,
}

#[derive(Deserialize, Default)]
struct GithubRepository {
    name: Option<String>,
    full_name: Option<String>,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    html_url: Option<String>,
    private: Option<bool>,
}

#[derive(Deserialize, Default)]
struct GitlabPush {
    #[serde(rename = "ref")]
    reference: Option<String>,
    before: Option<String>,
    after: Option<String>,
    checkout_sha: Option<String>,
    project: Option<GitlabProject>,
}

#[derive(Deserialize, Default)]
struct GitlabProject {
    name: Option<String>,
    path_with_namespace: Option<String>,
    http_url: Option<String>,
    ssh_url: Option<String>,
    web_url: Option<String>,
    visibility_level: Option<i64>,
}

/// Reads `body` as `provider` sends it.
pub fn parse(body: &[u8], provider: Provider) -> Result<Payload, ParseError> {
    match provider {
        Provider::GitHub | Provider::Gitea | Provider::Gogs | Provider::Forgejo => {
            let push: GithubPush = serde_json::from_slice(body)?;
            let repo = push.repository.unwrap_or_default();
            let after = push.after.unwrap_or_default();
            Ok(Payload {
                reference: push.reference.unwrap_or_default(),
                ref_type: push.ref_type.unwrap_or_default(),
                before: push.before.unwrap_or_default(),
                commit: after.trim().to_string(),
                after,
                name: repo.name.unwrap_or_default(),
                full_name: repo.full_name.unwrap_or_default(),
                clone_url: repo.clone_url.unwrap_or_default(),
                ssh_url: repo.ssh_url.unwrap_or_default(),
                web_url: repo.html_url.unwrap_or_default(),
                private: repo.private.unwrap_or_default(),
            })
        }
        Provider::GitLab => {
            let push: GitlabPush = serde_json::from_slice(body)?;
            let project = push.project.unwrap_or_default();
            Ok(Payload {
                reference: push.reference.unwrap_or_default(),
                ref_type: String::new(),
                before: push.before.unwrap_or_default(),
                after: push.after.unwrap_or_default(),
                commit: push.checkout_sha.unwrap_or_default().trim().to_string(),
                name: project.name.unwrap_or_default(),
                full_name: project.path_with_namespace.unwrap_or_default(),
                clone_url: project.http_url.unwrap_or_default(),
                ssh_url: project.ssh_url.unwrap_or_default(),
                web_url: project.web_url.unwrap_or_default(),
                private: project.visibility_level.unwrap_or_default() == 0,
            })
        }
        Provider::Oci => Err(ParseError::Unsupported),
    }
}

/// Whether a commit id means "no commit": empty, all zeros, or (as upstream's hash decoding reads
/// it) text whose leading hex digits all decode to zero bytes.
pub fn is_zero_commit(id: &str) -> bool {
    id.as_bytes()
        .chunks_exact(2)
        .take(20)
        .map_while(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .all(|byte| byte == 0)
}

/// The event header was missing, so upstream cannot tell whether this is a deletion (500).
#[derive(Debug, thiserror::Error)]
#[error("missing event header for {0}")]
pub struct MissingEventHeader(pub &'static str);

/// Whether the webhook reports a deleted branch or tag. `event` is the provider's event header.
pub fn is_deletion(
    provider: Provider,
    event: Option<&str>,
    payload: &Payload,
) -> Result<bool, MissingEventHeader> {
    let event = event.unwrap_or_default();
    if event.is_empty() && provider != Provider::Oci {
        return Err(MissingEventHeader(provider.name()));
    }
    Ok(match provider {
        Provider::GitHub | Provider::Gitea | Provider::Gogs | Provider::Forgejo => {
            if !is_zero_commit(&payload.before) && is_zero_commit(&payload.after) {
                true
            } else {
                event == "delete" && matches!(payload.ref_type.as_str(), "branch" | "tag")
            }
        }
        Provider::GitLab => {
            matches!(event, "Push Hook" | "Tag Push Hook")
                && is_zero_commit(&payload.after)
                && is_zero_commit(&payload.commit)
        }
        Provider::Oci => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/webhook/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn parses_upstreams_fixtures() {
        let cases = [
            (
                "github_payload.json",
                Provider::GitHub,
                Payload {
                    reference: "refs/heads/main".into(),
                    ref_type: String::new(),
                    before: "ea83e49e436fe8712548c52046bda4a7f87e85cc".into(),
                    after: "ebe8be9f3dd800674d7a197a2d55b63d44d82d75".into(),
                    commit: "ebe8be9f3dd800674d7a197a2d55b63d44d82d75".into(),
                    name: "doco-cd".into(),
                    full_name: "kimdre/doco-cd".into(),
                    clone_url: "https://github.com/kimdre/doco-cd.git".into(),
                    ssh_url: "git@github.com:kimdre/doco-cd.git".into(),
                    web_url: "https://github.com/kimdre/doco-cd".into(),
                    private: false,
                },
            ),
            (
                "github_payload_swarm_mode.json",
                Provider::GitHub,
                Payload {
                    reference: "refs/heads/swarm-mode".into(),
                    ref_type: String::new(),
                    before: "ef5cc9cede1c6062291bc089f8376fa503a7627c".into(),
                    after: "01435dad4e7ff8f7da70202ca1ca77bccca9eb62".into(),
                    commit: "01435dad4e7ff8f7da70202ca1ca77bccca9eb62".into(),
                    name: "doco-cd_tests".into(),
                    full_name: "kimdre/doco-cd_tests".into(),
                    clone_url: "https://github.com/kimdre/doco-cd_tests.git".into(),
                    ssh_url: "git@github.com:kimdre/doco-cd_tests.git".into(),
                    web_url: "https://github.com/kimdre/doco-cd_tests".into(),
                    private: false,
                },
            ),
            (
                "gitea_payload.json",
                Provider::Gitea,
                Payload {
                    reference: "refs/heads/main".into(),
                    ref_type: String::new(),
                    before: "4993315ad00f21444fc30268e378e52f3e07ae85".into(),
                    after: "057c9de74706fc7e3a1cf628408565e09e334e0b".into(),
                    commit: "057c9de74706fc7e3a1cf628408565e09e334e0b".into(),
                    name: "doco-cd".into(),
                    full_name: "kimdre/doco-cd".into(),
                    clone_url: "https://gitea.com/kimdre/doco-cd.git".into(),
                    ssh_url: "git@gitea.com:kimdre/doco-cd.git".into(),
                    web_url: "https://gitea.com/kimdre/doco-cd".into(),
                    private: false,
                },
            ),
            (
                "gitlab_payload.json",
                Provider::GitLab,
                Payload {
                    reference: "refs/heads/main".into(),
                    ref_type: String::new(),
                    before: "15b189048dcd079e1614c00bb781d0e962020d7e".into(),
                    after: "15b189048dcd079e1614c00bb781d0e962020d7e".into(),
                    commit: "15b189048dcd079e1614c00bb781d0e962020d7e".into(),
                    name: "test webhook".into(),
                    full_name: "kimdre/doco-cd".into(),
                    clone_url: "https://gitlab.com/kimdre/doco-cd.git".into(),
                    ssh_url: "git@gitlab.com:kimdre/doco-cd.git".into(),
                    web_url: "https://gitlab.com/kimdre/doco-cd".into(),
                    // visibility_level 0 is private.
                    private: true,
                },
            ),
        ];
        for (file, provider, want) in cases {
            let got = parse(&fixture(file), provider).unwrap();
            assert_eq!(got, want, "{file}");
        }
        // Gogs sends GitHub's shape.
        let gogs = parse(&fixture("gitea_payload.json"), Provider::Gogs).unwrap();
        assert_eq!(gogs.full_name, "kimdre/doco-cd");
    }

    #[test]
    fn nulls_and_missing_fields_are_empty_and_bad_json_is_an_error() {
        let p = parse(
            br#"{"ref":null,"repository":{"private":null},"extra":[1,2]}"#,
            Provider::GitHub,
        )
        .unwrap();
        assert_eq!(p, Payload::default());
        let p = parse(br#"{"project":{"visibility_level":20}}"#, Provider::GitLab).unwrap();
        assert!(!p.private);
        let p = parse(br#"{}"#, Provider::GitLab).unwrap();
        assert!(p.private, "a missing visibility level reads as 0, private");
        assert!(matches!(
            parse(b"not json", Provider::GitHub),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse(br#"{"ref":1}"#, Provider::Gitea),
            Err(ParseError::Json(_))
        ));
        assert_eq!(
            parse(br#"{"ref":"refs/heads/main"}"#, Provider::Forgejo)
                .unwrap()
                .reference,
            "refs/heads/main"
        );
        assert!(matches!(
            parse(br#"{"ref":"refs/heads/main"}"#, Provider::Oci),
            Err(ParseError::Unsupported)
        ));
    }

    #[test]
    fn zero_commits() {
        let zero = "0".repeat(40);
        for (id, want) in [
            ("", true),
            (zero.as_str(), true),
            ("0000000000000000000000000000000000000001", false),
            ("ea83e49e436fe8712548c52046bda4a7f87e85cc", false),
            // upstream decodes the leading hex: text that is not hex reads as zero.
            ("not-a-commit", true),
            ("00zz", true),
            ("01zz", false),
        ] {
            assert_eq!(is_zero_commit(id), want, "{id:?}");
        }
    }

    #[test]
    fn deletion_events() {
        let zero = "0".repeat(40);
        let sha = "ea83e49e436fe8712548c52046bda4a7f87e85cc";
        let push = |before: &str, after: &str, commit: &str, ref_type: &str| Payload {
            reference: "refs/heads/feature".into(),
            ref_type: ref_type.into(),
            before: before.into(),
            after: after.into(),
            commit: commit.into(),
            ..Payload::default()
        };
        let github_like = [
            Provider::GitHub,
            Provider::Gitea,
            Provider::Gogs,
            Provider::Forgejo,
        ];
        for provider in github_like {
            let cases = [
                ("push", push(sha, &zero, &zero, ""), true),
                ("push", push(sha, sha, sha, ""), false),
                ("push", push(&zero, sha, sha, ""), false),
                // A new branch pushed with nothing before it is not a deletion.
                ("push", push(&zero, &zero, &zero, ""), false),
                ("delete", push("", "", "", "branch"), true),
                ("delete", push("", "", "", "tag"), true),
                ("delete", push("", "", "", "repository"), false),
                ("create", push("", "", "", "branch"), false),
            ];
            for (event, payload, want) in cases {
                assert_eq!(
                    is_deletion(provider, Some(event), &payload).unwrap(),
                    want,
                    "{provider:?} {event} {payload:?}"
                );
            }
            assert!(is_deletion(provider, None, &push(sha, sha, sha, "")).is_err());
            assert!(is_deletion(provider, Some(""), &push(sha, sha, sha, "")).is_err());
        }
        let cases = [
            ("Push Hook", push(sha, &zero, &zero, ""), true),
            ("Tag Push Hook", push(sha, &zero, &zero, ""), true),
            ("Push Hook", push(sha, &zero, sha, ""), false),
            ("Push Hook", push(sha, sha, sha, ""), false),
            ("Merge Request Hook", push(sha, &zero, &zero, ""), false),
        ];
        for (event, payload, want) in cases {
            assert_eq!(
                is_deletion(Provider::GitLab, Some(event), &payload).unwrap(),
                want,
                "GitLab {event} {payload:?}"
            );
        }
        let err = is_deletion(Provider::GitLab, None, &push(sha, sha, sha, "")).unwrap_err();
        assert_eq!(err.to_string(), "missing event header for GitLab");
        assert!(!is_deletion(Provider::Oci, None, &Payload::default()).unwrap());
    }

    #[test]
    fn upstream_fixtures_are_not_deletions() {
        for (file, provider, event) in [
            ("github_payload.json", Provider::GitHub, "push"),
            ("gitea_payload.json", Provider::Gitea, "push"),
            ("gitlab_payload.json", Provider::GitLab, "Push Hook"),
        ] {
            let payload = parse(&fixture(file), provider).unwrap();
            assert!(
                !is_deletion(provider, Some(event), &payload).unwrap(),
                "{file}"
            );
        }
    }
}
