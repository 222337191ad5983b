//! Property tests: interval parsing (round trips, whole seconds, no panics) and path
//! normalisation (whatever a configuration says, no resolved path leaves the repository).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use doco_config::deploy::clean_relative;
use doco_config::values::parse_interval_str;
use doco_config::{DeployConfig, resolve_deployment};
use proptest::prelude::*;

proptest! {
    #[test]
    fn integer_seconds_round_trip(n in 0u64..10_000_000) {
        prop_assert_eq!(parse_interval_str(&n.to_string()), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_interval_str(&format!(" {n} ")), Ok(Duration::from_secs(n)));
    }

    #[test]
    fn negative_seconds_are_refused(n in 1i64..10_000_000) {
        let text = format!("-{n}");
        prop_assert!(parse_interval_str(&text).is_err());
    }

    #[test]
    fn go_durations_sum_their_parts(h in 0u64..100, m in 0u64..100, s in 0u64..100) {
        let text = format!("{h}h{m}m{s}s");
        prop_assert_eq!(
            parse_interval_str(&text),
            Ok(Duration::from_secs(h * 3600 + m * 60 + s))
        );
    }

    #[test]
    fn fractions_of_a_second_are_refused(s in 0u64..1000, ms in 1u64..1000) {
        let text = format!("{s}s{ms}ms");
        prop_assert!(parse_interval_str(&text).is_err());
    }

    #[test]
    fn any_text_gives_a_whole_second_interval_or_an_error(text in "\\PC{0,24}") {
        if let Ok(d) = parse_interval_str(&text) {
            prop_assert_eq!(d.subsec_nanos(), 0);
        }
    }

    #[test]
    fn cleaned_paths_never_escape(parts in prop::collection::vec(
        prop_oneof![Just(".."), Just("."), Just(""), Just("a"), Just("b"), Just("c d")], 0..8),
        absolute in any::<bool>())
    {
        let path = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
        match clean_relative("working_dir", &path) {
            Ok(clean) => {
                prop_assert!(!clean.starts_with('/'), "{clean}");
                prop_assert!(!clean.split('/').any(|c| c == ".." || c.is_empty()), "{clean}");
                // Lexical depth never goes below the start.
                let mut depth = 0i32;
                for c in parts.iter() {
                    match *c { ".." => depth -= 1, "." | "" => {}, _ => depth += 1 }
                    prop_assert!(depth >= 0);
                }
            }
            Err(e) => prop_assert!(e.message.contains("absolute") || e.message.contains("escapes")),
        }
    }

    /// Whatever working_dir, compose file and env file a deployment names, a resolved deployment
    /// only points inside the repository, symlinks included.
    #[test]
    fn resolved_paths_stay_in_the_repository(
        dir in prop::collection::vec(prop_oneof![
            Just(".."), Just("."), Just("app"), Just("out"), Just("loop"), Just("in")], 0..4),
        file in prop_oneof![Just("compose.yaml"), Just("../compose.yaml"), Just("secret.yaml"),
                            Just("../../etc/passwd"), Just("in/compose.yaml"), Just("/etc/passwd")],
        env in prop_oneof![Just(".env"), Just("../.env"), Just("../../x.env"), Just("out/x.env")],
    ) {
        let fixture = fixture();
        let root = fixture.repo.canonicalize().unwrap();
        let mut config = DeployConfig::new("p");
        config.working_dir = dir.join("/");
        config.compose_files = vec![file.to_owned()];
        config.compose_files_customized = true;
        config.env_files = vec![env.to_owned()];
        if config.validate().is_err() {
            return Ok(());
        }
        if let Ok(r) = resolve_deployment(config, &fixture.repo, None) {
            prop_assert!(r.working_dir.starts_with(&root), "{:?}", r.working_dir);
            for p in r.compose_files.iter().chain(r.env_files.iter()) {
                prop_assert!(p.starts_with(&root), "{p:?}");
            }
        }
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: std::path::PathBuf,
}

/// `<tmp>/repo` with compose files, plus symlinks out of it (`out`, `app/secret.yaml`) and a
/// file outside it.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let repo = tmp.path().join("repo");
    for dir in [&outside, &repo.join("app/in")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let write = |p: &Path| std::fs::write(p, "services: {}\n").unwrap();
    write(&outside.join("compose.yaml"));
    write(&outside.join("x.env"));
    write(&tmp.path().join("compose.yaml"));
    write(&repo.join("compose.yaml"));
    write(&repo.join("app/compose.yaml"));
    write(&repo.join("app/in/compose.yaml"));
    std::os::unix::fs::symlink(&outside, repo.join("out")).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("app/out")).unwrap();
    std::os::unix::fs::symlink(outside.join("compose.yaml"), repo.join("app/secret.yaml")).unwrap();
    std::os::unix::fs::symlink(&repo, repo.join("loop")).unwrap();
    Fixture { _tmp: tmp, repo }
}
