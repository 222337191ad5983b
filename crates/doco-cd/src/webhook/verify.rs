//! Who sent a webhook and whether they knew the secret, as upstream decides it: the first signature
//! header present wins (GitHub, Gitea, GitLab, Gogs, Forgejo, then upstream's OCI header); HMAC-SHA256
//! providers sign the raw body, GitLab sends the secret itself. Every comparison is constant-time.
//!
//! Pure: headers and body in, provider or refusal out.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The source code management system (or registry) a webhook came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
    Gogs,
    Forgejo,
    /// upstream's custom OCI registry notification.
    Oci,
}

impl Provider {
    /// upstream's display name.
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::Gitea => "Gitea",
            Provider::GitLab => "GitLab",
            Provider::Gogs => "Gogs",
            Provider::Forgejo => "Forgejo",
            Provider::Oci => "OCI Registry",
        }
    }

    /// The header carrying the signature (or GitLab's token).
    pub fn signature_header(self) -> &'static str {
        match self {
            Provider::GitHub => "X-Hub-Signature-256",
            Provider::Gitea => "X-Gitea-Signature",
            Provider::GitLab => "X-Gitlab-Token",
            Provider::Gogs => "X-Gogs-Signature",
            Provider::Forgejo => "X-Forgejo-Signature",
            Provider::Oci => "X-Doco-OCI-Signature-256",
        }
    }

    /// The header naming the event (`push`, `delete`, `Push Hook`, ...).
    pub fn event_header(self) -> &'static str {
        match self {
            Provider::GitHub => "X-GitHub-Event",
            Provider::Gitea => "X-Gitea-Event",
            Provider::GitLab => "X-Gitlab-Event",
            Provider::Gogs => "X-Gogs-Event",
            Provider::Forgejo => "X-Forgejo-Event",
            Provider::Oci => "X-Doco-OCI-Event",
        }
    }

    /// Whether the signature carries a `sha256=` prefix.
    fn prefixed(self) -> bool {
        matches!(self, Provider::GitHub | Provider::Oci)
    }
}

/// upstream's order of precedence when several signature headers are present.
pub const PRECEDENCE: [Provider; 6] = [
    Provider::GitHub,
    Provider::Gitea,
    Provider::GitLab,
    Provider::Gogs,
    Provider::Forgejo,
    Provider::Oci,
];

/// Why a webhook was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No known signature header (400).
    #[error("missing signature or token header")]
    MissingHeader,
    /// The HMAC did not match (401).
    #[error("HMAC verification failed")]
    Hmac(Provider),
    /// GitLab's token did not match (401).
    #[error("gitlab token verification failed")]
    GitlabToken,
}

/// The provider of a webhook whose signature matches `secret`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Provider, VerifyError> {
    let (provider, value) = PRECEDENCE
        .iter()
        .find_map(|p| {
            let value = headers.get(p.signature_header())?.as_bytes();
            (!value.is_empty()).then_some((*p, value))
        })
        .ok_or(VerifyError::MissingHeader)?;
    if provider == Provider::GitLab {
        return if bool::from(value.ct_eq(secret.as_bytes())) {
            Ok(provider)
        } else {
            Err(VerifyError::GitlabToken)
        };
    }
    let signature = if provider.prefixed() {
        value.strip_prefix(b"sha256=").unwrap_or(value)
    } else {
        value
    };
    if hmac_matches(body, signature, secret) {
        Ok(provider)
    } else {
        Err(VerifyError::Hmac(provider))
    }
}

/// Whether `signature` is the lower-case hex HMAC-SHA256 of `body` under `secret` (upstream compares
/// the hex text, so upper-case hex, a wrong length or non-hex text never match).
fn hmac_matches(body: &[u8], signature: &[u8], secret: &str) -> bool {
    let expected = sign(body, secret);
    bool::from(expected.as_bytes().ct_eq(signature))
}

/// The lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(body: &[u8], secret: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "s3cret";
    const BODY: &[u8] = br#"{"ref":"refs/heads/main"}"#;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn sign_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"what do ya want for nothing?", "Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn every_provider_good_bad_missing_malformed_and_wrong_length() {
        let good = sign(BODY, SECRET);
        let other = sign(BODY, "other-secret");
        let hmac_providers = [
            (Provider::GitHub, "X-Hub-Signature-256", "sha256="),
            (Provider::Gitea, "X-Gitea-Signature", ""),
            (Provider::Gogs, "X-Gogs-Signature", ""),
            (Provider::Forgejo, "X-Forgejo-Signature", ""),
            (Provider::Oci, "X-Doco-OCI-Signature-256", "sha256="),
        ];
        for (provider, header, prefix) in hmac_providers {
            let cases: Vec<(String, Result<Provider, VerifyError>)> = vec![
                (format!("{prefix}{good}"), Ok(provider)),
                (format!("{prefix}{other}"), Err(VerifyError::Hmac(provider))),
                (
                    format!("{prefix}{}", "zz".repeat(32)),
                    Err(VerifyError::Hmac(provider)),
                ),
                (
                    format!("{prefix}{}", &good[..63]),
                    Err(VerifyError::Hmac(provider)),
                ),
                (
                    format!("{prefix}{good}00"),
                    Err(VerifyError::Hmac(provider)),
                ),
                (
                    format!("{prefix}{}", good.to_uppercase()),
                    Err(VerifyError::Hmac(provider)),
                ),
            ];
            for (value, want) in cases {
                let got = verify(&headers(&[(header, value.clone())]), BODY, SECRET);
                assert_eq!(got, want, "{header}: {value}");
            }
            // The same signature over another body does not match.
            let got = verify(
                &headers(&[(header, format!("{prefix}{good}"))]),
                b"{}",
                SECRET,
            );
            assert_eq!(got, Err(VerifyError::Hmac(provider)), "{header}");
        }
        // GitHub also accepts the bare hex (upstream trims an optional prefix).
        assert_eq!(
            verify(
                &headers(&[("X-Hub-Signature-256", good.clone())]),
                BODY,
                SECRET
            ),
            Ok(Provider::GitHub)
        );
    }

    #[test]
    fn gitlab_compares_the_token() {
        for (token, want) in [
            (SECRET.to_string(), Ok(Provider::GitLab)),
            ("s3cre".to_string(), Err(VerifyError::GitlabToken)),
            ("s3cret2".to_string(), Err(VerifyError::GitlabToken)),
            ("S3CRET".to_string(), Err(VerifyError::GitlabToken)),
            (sign(BODY, SECRET), Err(VerifyError::GitlabToken)),
        ] {
            let got = verify(&headers(&[("X-Gitlab-Token", token.clone())]), BODY, SECRET);
            assert_eq!(got, want, "{token}");
        }
    }

    #[test]
    fn missing_or_empty_headers() {
        assert_eq!(
            verify(&HeaderMap::new(), BODY, SECRET),
            Err(VerifyError::MissingHeader)
        );
        assert_eq!(
            verify(
                &headers(&[("X-Hub-Signature-256", String::new())]),
                BODY,
                SECRET
            ),
            Err(VerifyError::MissingHeader)
        );
        // An unrelated signature header is not a signature.
        assert_eq!(
            verify(
                &headers(&[("X-Hub-Signature", "sha1=abc".into())]),
                BODY,
                SECRET
            ),
            Err(VerifyError::MissingHeader)
        );
    }

    #[test]
    fn precedence_is_upstreams() {
        let good = sign(BODY, SECRET);
        // GitHub first: a bad GitHub signature is not rescued by a good Gitea one.
        let h = headers(&[
            ("X-Hub-Signature-256", "sha256=00".into()),
            ("X-Gitea-Signature", good.clone()),
        ]);
        assert_eq!(
            verify(&h, BODY, SECRET),
            Err(VerifyError::Hmac(Provider::GitHub))
        );
        // Gitea before GitLab, GitLab before Gogs, Gogs before Forgejo.
        let h = headers(&[
            ("X-Gitea-Signature", good.clone()),
            ("X-Gitlab-Token", "wrong".into()),
        ]);
        assert_eq!(verify(&h, BODY, SECRET), Ok(Provider::Gitea));
        let h = headers(&[
            ("X-Gitlab-Token", SECRET.into()),
            ("X-Gogs-Signature", "00".into()),
        ]);
        assert_eq!(verify(&h, BODY, SECRET), Ok(Provider::GitLab));
        let h = headers(&[
            ("X-Gogs-Signature", good.clone()),
            ("X-Forgejo-Signature", "00".into()),
        ]);
        assert_eq!(verify(&h, BODY, SECRET), Ok(Provider::Gogs));
        // Forgejo sends both its own and Gitea's header: Gitea's is used.
        let h = headers(&[
            ("X-Forgejo-Signature", good.clone()),
            ("X-Gitea-Signature", good),
        ]);
        assert_eq!(verify(&h, BODY, SECRET), Ok(Provider::Gitea));
    }
}
