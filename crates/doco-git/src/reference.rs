//! References as users write them (`main`, `v1.2`, `refs/heads/x`, `refs/tags/x`, a commit SHA) and
//! how one `git ls-remote` answer resolves them to a commit.
//!
//! A reference is checked here before it reaches git's argv, so that nothing a user configures can be
//! read as an option, and so that one `ls-remote` with exactly the right patterns is enough.

use std::collections::BTreeMap;

use crate::GitError;

/// A validated reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    /// A full 40-hex commit SHA (lower case).
    Commit(String),
    /// `HEAD`: the remote's default branch.
    Head,
    /// A full reference name starting with `refs/`, matched exactly.
    Full(String),
    /// A bare name: `refs/heads/<name>`, else `refs/tags/<name>`.
    Short(String),
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Reference, GitError> {
        let invalid = |reason: &str| GitError::InvalidInput {
            what: format!("reference '{}'", reference.escape_debug()),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(invalid("it is empty"));
        }
        if reference.starts_with('-') {
            return Err(invalid("it starts with '-'"));
        }
        if reference.chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid("it contains spaces or control characters"));
        }
        if let Some(c) = reference
            .chars()
            .find(|c| matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
        {
            return Err(invalid(&format!("it contains '{c}'")));
        }
        if reference.contains("..") {
            return Err(invalid("it contains '..'"));
        }
        if reference.contains("@{") || reference == "@" {
            return Err(invalid("it contains '@{' or is '@'"));
        }
        if reference.starts_with('/') || reference.ends_with('/') || reference.contains("//") {
            return Err(invalid("it has an empty path component"));
        }
        if reference.ends_with('.') || reference.ends_with(".lock") {
            return Err(invalid("it ends with '.' or '.lock'"));
        }
        if reference.split('/').any(|c| c.starts_with('.')) {
            return Err(invalid("a component starts with '.'"));
        }
        if reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(Reference::Commit(reference.to_ascii_lowercase()));
        }
        if reference == "HEAD" {
            return Ok(Reference::Head);
        }
        if reference.starts_with("refs/") {
            return Ok(Reference::Full(reference.to_string()));
        }
        Ok(Reference::Short(reference.to_string()))
    }

    /// The patterns for one `git ls-remote` call (empty for a commit, which needs none).
    pub fn patterns(&self) -> Vec<String> {
        match self {
            Reference::Commit(_) => Vec::new(),
            Reference::Head => vec!["HEAD".to_string()],
            Reference::Full(r) => vec![r.clone(), format!("{r}^{{}}")],
            Reference::Short(x) => vec![
                format!("refs/heads/{x}"),
                format!("refs/tags/{x}"),
                format!("refs/tags/{x}^{{}}"),
            ],
        }
    }

    /// Picks the commit from `ls-remote` output: the exact ref (branch before tag for a bare name),
    /// peeled (`^{}`) when it is an annotated tag. Returns `(full ref name, commit)`.
    pub fn pick(&self, ls_remote_stdout: &str) -> Option<(String, String)> {
        let refs: BTreeMap<&str, &str> = ls_remote_stdout
            .lines()
            .filter_map(|line| {
                let (sha, name) = line.split_once('\t')?;
                Some((name.trim(), sha.trim()))
            })
            .collect();
        let exact = |name: &str| -> Option<(String, String)> {
            let peeled = format!("{name}^{{}}");
            refs.get(peeled.as_str())
                .or_else(|| refs.get(name))
                .map(|sha| (name.to_string(), sha.to_string()))
        };
        match self {
            Reference::Commit(sha) => Some((sha.clone(), sha.clone())),
            Reference::Head => exact("HEAD"),
            Reference::Full(r) => exact(r),
            Reference::Short(x) => {
                exact(&format!("refs/heads/{x}")).or_else(|| exact(&format!("refs/tags/{x}")))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LS: &str = "\
1111111111111111111111111111111111111111\trefs/heads/main
2222222222222222222222222222222222222222\trefs/tags/main
3333333333333333333333333333333333333333\trefs/tags/v1
4444444444444444444444444444444444444444\trefs/tags/v1^{}
5555555555555555555555555555555555555555\trefs/tags/light
6666666666666666666666666666666666666666\trefs/heads/feature/main
7777777777777777777777777777777777777777\trefs/pull/1/head
1111111111111111111111111111111111111111\tHEAD
";

    #[test]
    fn parses_forms() {
        let sha = "ABCDEF0123456789abcdef0123456789ABCDEF01";
        assert_eq!(
            Reference::parse(sha).unwrap(),
            Reference::Commit(sha.to_ascii_lowercase())
        );
        assert_eq!(Reference::parse("HEAD").unwrap(), Reference::Head);
        assert_eq!(
            Reference::parse("refs/tags/v1").unwrap(),
            Reference::Full("refs/tags/v1".into())
        );
        assert_eq!(
            Reference::parse("feature/x-1.2").unwrap(),
            Reference::Short("feature/x-1.2".into())
        );
        // 39 hex digits is a name, not a commit.
        assert!(matches!(
            Reference::parse(&sha[..39]).unwrap(),
            Reference::Short(_)
        ));
    }

    #[test]
    fn refuses_dangerous_or_malformed_references() {
        for bad in [
            "",
            "-b",
            "--upload-pack=x",
            "main..dev",
            "a b",
            "a\nb",
            "a\0b",
            "x~1",
            "x^{}",
            "x:y",
            "x*",
            "a//b",
            "/a",
            "a/",
            "a.lock",
            "a.",
            "refs/heads/.hidden",
            "@",
            "a@{1}",
            "a\\b",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(
                matches!(err, GitError::InvalidInput { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn picks_from_ls_remote() {
        let pick = |r: &str| Reference::parse(r).unwrap().pick(LS).map(|(_, sha)| sha);
        let d = |c: char| Some(c.to_string().repeat(40));
        assert_eq!(
            pick("main"),
            d('1'),
            "a branch wins over a tag of the same name"
        );
        assert_eq!(pick("refs/tags/main"), d('2'));
        assert_eq!(pick("v1"), d('4'), "annotated tags are peeled");
        assert_eq!(pick("refs/tags/v1"), d('4'));
        assert_eq!(pick("light"), d('5'));
        assert_eq!(pick("feature/main"), d('6'));
        assert_eq!(pick("refs/pull/1/head"), d('7'));
        assert_eq!(pick("HEAD"), d('1'));
        assert_eq!(pick("nope"), None);
        assert_eq!(
            pick("heads/main"),
            None,
            "tail matches are not exact matches"
        );
        assert_eq!(
            Reference::parse("v1").unwrap().pick(LS).unwrap().0,
            "refs/tags/v1"
        );
        assert_eq!(
            Reference::parse("v1").unwrap().patterns(),
            ["refs/heads/v1", "refs/tags/v1", "refs/tags/v1^{}"]
        );
    }
}
