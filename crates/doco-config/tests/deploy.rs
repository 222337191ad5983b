//! Deploy-config files over fixture directories: lookup order, multi-document files, per-document
//! errors, warnings, path rules (including symlinks), compose/env file checks, inline deployments,
//! reference defaulting and hash stability.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use doco_config::{
    DeployConfig, DeployConfigError, ResolvedDeployment, load_deploy_configs, resolve_deployments,
    resolve_external,
};

mod support;

use support::Repo;

impl Repo {
    fn load(&self) -> Vec<Result<DeployConfig, DeployConfigError>> {
        load_deploy_configs(self.path(), "/", "").unwrap()
    }

    fn resolve(
        &self,
        inline: &[DeployConfig],
        poll_reference: &str,
    ) -> Vec<Result<ResolvedDeployment, String>> {
        resolve_deployments(inline, self.path(), "/", "", poll_reference)
            .unwrap()
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    fn real(&self, path: &str) -> PathBuf {
        self.path().canonicalize().unwrap().join(path)
    }
}

fn names(entries: &[Result<DeployConfig, DeployConfigError>]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match e {
            Ok(c) => c.name.clone(),
            Err(e) => format!("ERR {e}"),
        })
        .collect()
}

const COMPOSE: &str = "services:\n  app:\n    image: busybox\n";

/// As upstream: a repository without `.doco-cd.y(a)ml` fails, it does not deploy nothing.
#[test]
fn no_file_is_an_error_not_an_empty_list() {
    let repo = Repo::new(&[("compose.yaml", COMPOSE)]);
    let err = load_deploy_configs(repo.path(), "/", "").unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = resolve_deployments(&[], repo.path(), "/", "", "main").unwrap_err();
    assert!(
        err.to_string().contains(".doco-cd.yaml nor .doco-cd.yml"),
        "{err}"
    );
}

#[test]
fn defaults_of_a_minimal_document() {
    let repo = Repo::new(&[(".doco-cd.yml", "name: app\n")]);
    let entries = repo.load();
    let c = entries[0].as_ref().unwrap();
    assert_eq!(c.name, "app");
    assert_eq!(c.reference, None);
    assert_eq!(c.repository_url, None);
    assert_eq!(c.working_dir, ".");
    assert_eq!(
        c.compose_files,
        [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yml",
            "docker-compose.yaml"
        ]
    );
    assert!(!c.compose_files_customized);
    assert_eq!(c.env_files, [".env"]);
    assert!(c.profiles.is_empty() && c.environment.is_empty());
    assert!(c.remove_orphans && c.prune_images && c.wait_running_jobs);
    assert!(!c.force_recreate && !c.force_image_pull);
    assert_eq!(c.timeout, 180);
    assert_eq!(c.git_depth, 0);
    assert!(
        !c.destroy.enabled
            && c.destroy.remove_volumes
            && c.destroy.remove_images
            && c.destroy.remove_dir
    );
    assert!(
        !c.auto_discovery.enabled && c.auto_discovery.remove_images && !c.auto_discovery.delete
    );
    assert!(c.reconciliation.enabled);
    assert_eq!(c.reconciliation.events, ["unhealthy"]);
    assert_eq!(
        (
            c.reconciliation.restart_timeout,
            c.reconciliation.restart_limit,
            c.reconciliation.restart_window
        ),
        (10, 5, 300)
    );
    assert_eq!(c.source, "git");
    assert_eq!(c.version, "doco.v1");
    assert!(c.warnings.is_empty());
    assert_eq!(
        c,
        &DeployConfig::new("app"),
        "DeployConfig::new matches the file defaults"
    );
}

#[test]
fn full_document_and_bool_or_object_fields() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: full\nreference: v1.10\nworking_dir: ./apps/./web/\ncompose_files: [base.yml, prod.yml]\n\
         environment: {A: '1'}\nenv_files: [.env, secrets.env]\nprofiles: [prod]\nremove_orphans: false\n\
         timeout: 60\ngit_depth: 5\nbuild: {no_cache: true, args: {V: '2'}}\n\
         destroy: {enabled: true, remove_volumes: false}\nauto_discovery: false\n\
         reconciliation: {events: [Die, remove, die, oom], restart_signal: sigkill}\nswarm: {config_retention: -1}\n",
    )]);
    let c = repo.load().remove(0).unwrap();
    assert_eq!(
        c.reference.as_deref(),
        Some("v1.10"),
        "strings keep their text"
    );
    assert_eq!(c.working_dir, "apps/web");
    assert_eq!(c.compose_files, ["base.yml", "prod.yml"]);
    assert!(c.compose_files_customized);
    assert_eq!(c.environment["A"], "1");
    assert_eq!(c.env_files, [".env", "secrets.env"]);
    assert!(!c.remove_orphans);
    assert_eq!((c.timeout, c.git_depth), (60, 5));
    assert!(c.build.no_cache && c.build.args["V"] == "2");
    assert!(c.destroy.enabled && !c.destroy.remove_volumes && c.destroy.remove_images);
    assert!(!c.auto_discovery.enabled);
    assert_eq!(c.reconciliation.events, ["die", "destroy", "oom"]);
    assert_eq!(c.reconciliation.restart_signal, "SIGKILL");
    assert_eq!(c.swarm.config_retention, Some(-1));

    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: a\ndestroy: true\nreconciliation: false\n---\nname: b\nreconciliation: {events: []}\n",
    )]);
    let entries = repo.load();
    let a = entries[0].as_ref().unwrap();
    assert!(
        a.destroy.enabled && a.destroy.remove_volumes,
        "`destroy: true` keeps the other defaults"
    );
    assert!(!a.reconciliation.enabled);
    assert!(
        !entries[1].as_ref().unwrap().reconciliation.enabled,
        "an empty event list disables reconciliation"
    );
}

#[test]
fn multi_document_files_with_empty_trailing_document() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "---\nname: a\n---\n# second\nname: b\n---\nname: c\n---\n",
    )]);
    assert_eq!(names(&repo.load()), ["a", "b", "c"]);
}

#[test]
fn yaml_is_preferred_over_yml_and_targets_select_their_file() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "name: from-yml\n"),
        (".doco-cd.yaml", "name: from-yaml\n"),
        (".doco-cd.nas.yml", "name: nas-yml\n"),
        ("configs/.doco-cd.yml", "name: in-base-dir\n"),
    ]);
    assert_eq!(names(&repo.load()), ["from-yaml"]);
    assert_eq!(
        names(&load_deploy_configs(repo.path(), "/", "nas").unwrap()),
        ["nas-yml"]
    );
    assert!(
        load_deploy_configs(repo.path(), "/", "other")
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        names(&load_deploy_configs(repo.path(), "configs", "").unwrap()),
        ["in-base-dir"]
    );
    assert_eq!(
        names(&load_deploy_configs(repo.path(), "/configs/", "").unwrap()),
        ["in-base-dir"]
    );
    assert!(load_deploy_configs(repo.path(), "../elsewhere", "").is_err());
}

/// A target without its file fails resolution (polls and webhooks alike, as upstream fails the
/// job), naming both file names and the directory searched; inline deployments need no file.
#[test]
fn a_target_without_its_file_is_an_error_naming_the_file() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "name: default\n"),
        ("deploy/.doco-cd.nas.yml", "name: nas\n"),
        ("compose.yml", "services: {}\n"),
    ]);
    let cases = [
        // (base dir, target, expected message)
        (
            "/",
            "nas",
            "no deploy configuration for target `nas`: neither .doco-cd.nas.yaml nor .doco-cd.nas.yml exists in {root}",
        ),
        (
            "/",
            "pi",
            "no deploy configuration for target `pi`: neither .doco-cd.pi.yaml nor .doco-cd.pi.yml exists in {root}",
        ),
        (
            "deploy",
            "",
            "no deploy configuration: neither .doco-cd.yaml nor .doco-cd.yml exists in {root}/deploy",
        ),
        (
            "/deploy/",
            "pi",
            "no deploy configuration for target `pi`: neither .doco-cd.pi.yaml nor .doco-cd.pi.yml exists in {root}/deploy",
        ),
    ];
    let root = repo.path().display().to_string();
    for (base_dir, target, expected) in cases {
        let err = resolve_deployments(&[], repo.path(), base_dir, target, "main").unwrap_err();
        assert!(err.is_not_found(), "{base_dir} {target}: {err:?}");
        assert_eq!(err.to_string(), expected.replace("{root}", &root));
    }
    let found =
        |base_dir, target| names(&load_deploy_configs(repo.path(), base_dir, target).unwrap());
    assert_eq!(found("/", ""), ["default"]);
    assert_eq!(found("deploy", "nas"), ["nas"]);
    let inline = DeployConfig {
        name: "inline".into(),
        ..DeployConfig::default()
    };
    let resolved = resolve_deployments(&[inline], repo.path(), "/", "pi", "main").unwrap();
    assert!(resolved[0].is_ok(), "{resolved:?}");
    let broken = Repo::new(&[(".doco-cd.pi.yml", "name: [\n")]);
    let err = resolve_deployments(&[], broken.path(), "/", "pi", "main").unwrap_err();
    assert!(!err.is_not_found(), "a broken file exists: {err}");
}

#[test]
fn duplicate_names_fail_the_later_document() {
    let repo = Repo::new(&[(".doco-cd.yml", "name: a\n---\nname: b\n---\nname: a\n")]);
    let entries = repo.load();
    assert_eq!(names(&entries)[..2], ["a", "b"]);
    let err = entries[2].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("document 3")
            && err.contains("duplicate deployment name \"a\" (already used by document 1)"),
        "{err}"
    );
}

#[test]
fn malformed_yaml_fails_the_file_with_line_and_column() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: a\n---\nname: b\ncompose_files: [a.yml\nprofiles: []\n",
    )]);
    let err = load_deploy_configs(repo.path(), "/", "").unwrap_err();
    let DeployConfigError::Syntax {
        file, line, column, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(file.ends_with(".doco-cd.yml"));
    assert!(*line >= 4 && *column > 0, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(".doco-cd.yml: line ") && text.contains("invalid YAML"),
        "{text}"
    );
}

#[test]
fn one_bad_document_does_not_stop_the_others() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: good1\n---\nname: bad\ntimeout: soon\n---\nworking_dir: x\n---\nname: good2\nreconciliation: {events: [explode]}\n---\nname: good3\n",
    )]);
    let entries = repo.load();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].as_ref().unwrap().name, "good1");
    assert_eq!(entries[4].as_ref().unwrap().name, "good3");

    let type_error = entries[1].as_ref().unwrap_err().to_string();
    assert!(
        type_error.contains("document 2 (deployment \"bad\") line 4 column"),
        "{type_error}"
    );
    assert!(type_error.contains("field `timeout`"), "{type_error}");

    let missing_name = entries[2].as_ref().unwrap_err().to_string();
    assert!(
        missing_name.contains("document 3: field `name`: missing"),
        "{missing_name}"
    );

    let bad_event = entries[3].as_ref().unwrap_err().to_string();
    assert!(
        bad_event.contains("field `reconciliation.events`: unsupported event \"explode\""),
        "{bad_event}"
    );
}

#[test]
fn non_mapping_document_is_an_error() {
    let repo = Repo::new(&[(".doco-cd.yml", "- name: a\n")]);
    let err = repo.load().remove(0).unwrap_err().to_string();
    assert!(
        err.contains("expected a mapping of deployment settings"),
        "{err}"
    );
}

#[test]
fn unknown_and_legacy_keys_warn() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: a\ncompose_file: [x.yml]\ndestroy_opts: {remove_volumes: false}\nbuild_opts: {}\nauto_discover_opts: {}\nbuild: {nocache: true}\nzzz: 1\n",
    )]);
    let c = repo.load().remove(0).unwrap();
    let w = c.warnings.join("\n");
    for want in [
        "document 1 (deployment \"a\"): unknown key `compose_file` is ignored: did you mean `compose_files`?",
        "`destroy_opts` is a legacy key and is ignored: use `destroy` instead",
        "`build_opts` is a legacy key and is ignored: use `build` instead",
        "`auto_discover_opts` is a legacy key and is ignored: use `auto_discovery` instead",
        "unknown key `build.nocache` is ignored: did you mean `build.no_cache`?",
        "unknown key `zzz` is ignored\n",
    ] {
        assert!(format!("{w}\n").contains(want), "missing {want:?} in:\n{w}");
    }
    assert!(
        !c.compose_files_customized,
        "the misspelt key does not customize the list"
    );
}

#[test]
fn an_absolute_working_dir_is_read_inside_the_repository_with_a_warning() {
    for (given, want) in [
        ("/apps/web", "apps/web"),
        ("/apps/../web/", "web"),
        ("/../etc", "etc"),
        ("/", "."),
    ] {
        let repo = Repo::new(&[(".doco-cd.yml", &format!("name: a\nworking_dir: {given}\n"))]);
        let c = repo.load().remove(0).unwrap();
        assert_eq!(c.working_dir, want, "{given}");
        let warnings = c.warnings.join("\n");
        assert!(
            warnings.contains(&format!(
                "working_dir {given:?} is absolute: read as {want:?}"
            )),
            "{given}: {warnings}"
        );
    }
}

#[test]
fn a_context_is_a_name_of_the_docker_cli_context_store() {
    for context in ["", "default", " nas "] {
        let repo = Repo::new(&[(
            ".doco-cd.yml",
            &format!("name: a\ncontext: \"{context}\"\n"),
        )]);
        assert!(repo.load()[0].is_ok(), "{context:?}");
    }
    let repo = Repo::new(&[(".doco-cd.yml", "name: a\ncontext: ../nas\n")]);
    let err = repo.load().remove(0).unwrap_err().to_string();
    assert!(
        err.contains("field `context`: \"../nas\" is not a Docker context name"),
        "{err}"
    );
}

#[test]
fn lexical_path_rules() {
    let cases: &[(&str, &str)] = &[
        (
            "working_dir: ../other",
            "field `working_dir`: \"../other\" escapes the repository",
        ),
        ("working_dir: a/../../b", "escapes the repository"),
        (
            "compose_files: [/etc/compose.yml]",
            "field `compose_files`: \"/etc/compose.yml\" is an absolute path",
        ),
        (
            "working_dir: app\ncompose_files: [../compose.yml]",
            "field `compose_files`: \"../compose.yml\" escapes",
        ),
        (
            "compose_files: []",
            "field `compose_files`: must list at least one compose file",
        ),
        (
            "env_files: [/run/secrets/env]",
            "field `env_files`: \"/run/secrets/env\" is an absolute path",
        ),
        (
            "env_files: [../../x.env]",
            "field `env_files`: \"../../x.env\" escapes the repository",
        ),
        (
            "env_files: ['remote:x.env']",
            "reads from `repository_url`, which is not set",
        ),
    ];
    for (yaml, want) in cases {
        let repo = Repo::new(&[(".doco-cd.yml", &format!("name: a\n{yaml}\n"))]);
        let err = repo.load().remove(0).expect_err(yaml).to_string();
        assert!(err.contains(want), "{yaml}\n got: {err}\nwant: {want}");
    }
    // Climbing inside the repository is fine.
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: a\nworking_dir: app\nenv_files: [../shared.env]\n",
    )]);
    assert!(repo.load()[0].is_ok());
}

#[test]
fn resolution_of_paths_in_the_checkout() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "name: web\nworking_dir: app\nenv_files: [.env, ../shared.env]\n",
        ),
        ("app/docker-compose.yml", COMPOSE),
        ("app/compose.yaml", COMPOSE),
        ("app/.env", "A=1\n"),
        ("shared.env", "B=2\n"),
    ]);
    let r = repo.resolve(&[], "refs/heads/dev").remove(0).unwrap();
    assert_eq!(r.working_dir, repo.real("app"));
    assert_eq!(
        r.compose_files,
        [
            repo.real("app/compose.yaml"),
            repo.real("app/docker-compose.yml")
        ],
        "default order kept"
    );
    assert_eq!(
        r.env_files,
        [repo.real("app/.env"), repo.real("shared.env")]
    );
    assert_eq!(
        r.source_file.as_deref(),
        Some(repo.path().join(".doco-cd.yml").as_path())
    );
    assert_eq!(
        r.config.reference.as_deref(),
        Some("refs/heads/dev"),
        "reference defaults to the poll's"
    );
    assert_eq!(r.external_repository, None);
}

#[test]
fn repository_url_deployments_read_local_env_files_here_and_the_rest_there() {
    let here = Repo::new(&[
        (
            ".doco-cd.yml",
            "name: other
repository_url: https://git.example.com/o/other.git
reference: main
working_dir: app
env_files: [vars.env, \"remote:app.env\"]
",
        ),
        ("vars.env", "A=1\n"),
    ]);
    let there = Repo::new(&[("app/compose.yaml", COMPOSE), ("app/app.env", "B=2\n")]);
    // The poll's reference differs: `reference` names the other repository's.
    let resolved = here.resolve(&[], "refs/heads/dev").remove(0).unwrap();
    assert_eq!(
        resolved.external_repository.as_deref(),
        Some("https://git.example.com/o/other.git")
    );
    assert_eq!(resolved.other_reference, None);
    let declared = resolved.config.env_files.clone();
    let mut deployments = resolve_external(
        resolved.config,
        there.path(),
        here.path(),
        resolved.source_file,
    );
    let d = deployments.remove(0).unwrap();
    assert_eq!(d.working_dir, there.real("app"));
    assert_eq!(d.compose_files, [there.real("app/compose.yaml")]);
    assert_eq!(
        d.env_files,
        [here.real("vars.env"), there.real("app/app.env")]
    );
    assert_eq!(
        d.config.env_files, declared,
        "the deploy config (and its hash) as written"
    );
    assert_eq!(d.external_repository, None);

    // A local env file that is missing is an error naming it; auto-discovery scans the other one.
    let here = Repo::new(&[(
        ".doco-cd.yml",
        "name: t\nrepository_url: https://git.example.com/o/other.git\nauto_discovery: true\nenv_files: [missing.env]\n",
    )]);
    let there = Repo::new(&[("one/compose.yaml", COMPOSE), ("two/compose.yaml", COMPOSE)]);
    let template = here.resolve(&[], "main").remove(0).unwrap();
    let err = resolve_external(
        template.config.clone(),
        there.path(),
        here.path(),
        template.source_file.clone(),
    )
    .remove(0)
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing.env"), "{err}");
    let here = Repo::new(&[(
        ".doco-cd.yml",
        "name: t\nrepository_url: https://git.example.com/o/other.git\nauto_discovery: true\n",
    )]);
    let template = here.resolve(&[], "main").remove(0).unwrap();
    let names: Vec<String> = resolve_external(
        template.config,
        there.path(),
        here.path(),
        template.source_file,
    )
    .into_iter()
    .map(|d| d.unwrap().config.name)
    .collect();
    assert_eq!(names, ["one", "two"]);
}

#[test]
fn reference_defaulting() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "name: a\n---\nname: b\nreference: refs/tags/v2\n",
        ),
        ("compose.yaml", COMPOSE),
    ]);
    let refs: Vec<_> = repo
        .resolve(&[], "refs/heads/feature")
        .into_iter()
        .map(|r| r.unwrap().config.reference.unwrap())
        .collect();
    assert_eq!(refs, ["refs/heads/feature", "refs/tags/v2"]);
    let r = repo.resolve(&[], "").remove(0).unwrap();
    assert_eq!(r.config.reference.as_deref(), Some("refs/heads/main"));
}

#[test]
fn missing_compose_files_default_vs_customized() {
    // Default list: missing names are skipped, none at all is an error.
    let repo = Repo::new(&[
        (".doco-cd.yml", "name: a\n"),
        ("docker-compose.yaml", COMPOSE),
    ]);
    let r = repo.resolve(&[], "main").remove(0).unwrap();
    assert_eq!(r.compose_files, [repo.real("docker-compose.yaml")]);

    let repo = Repo::new(&[(".doco-cd.yml", "name: a\n"), ("README", "")]);
    let err = repo.resolve(&[], "main").remove(0).unwrap_err();
    assert!(err.contains("field `compose_files`: no compose file found in working_dir \".\" (looked for compose.yaml,"), "{err}");

    // Customized list: each must exist.
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "name: a\ncompose_files: [compose.yaml, override.yml]\n",
        ),
        ("compose.yaml", COMPOSE),
    ]);
    let err = repo.resolve(&[], "main").remove(0).unwrap_err();
    assert!(
        err.contains("(deployment \"a\")")
            && err.contains("\"override.yml\" does not exist in working_dir"),
        "{err}"
    );

    // Missing default .env is dropped, a missing custom env file is an error.
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "name: a\n---\nname: b\nenv_files: [prod.env]\n",
        ),
        ("compose.yaml", COMPOSE),
    ]);
    let mut results = repo.resolve(&[], "main");
    assert!(results.remove(0).unwrap().env_files.is_empty());
    let err = results.remove(0).unwrap_err();
    assert!(
        err.contains("document 2")
            && err.contains("field `env_files`: \"prod.env\" does not exist"),
        "{err}"
    );

    // A missing working directory.
    let repo = Repo::new(&[(".doco-cd.yml", "name: a\nworking_dir: nope\n")]);
    let err = repo.resolve(&[], "main").remove(0).unwrap_err();
    assert!(
        err.contains("field `working_dir`: \"nope\" does not exist in the repository"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn symlinks_pointing_outside_are_refused() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("compose.yaml"), COMPOSE).unwrap();
    std::fs::write(outside.path().join("evil.env"), "X=1\n").unwrap();

    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: a\nworking_dir: linked\n---\nname: b\n---\nname: c\nenv_files: [evil.env]\n---\nname: d\nworking_dir: inner\n",
    )]);
    symlink(outside.path(), repo.path().join("linked")).unwrap();
    symlink(
        outside.path().join("compose.yaml"),
        repo.path().join("compose.yaml"),
    )
    .unwrap();
    symlink(
        outside.path().join("evil.env"),
        repo.path().join("evil.env"),
    )
    .unwrap();
    // A symlink that stays inside the repository is fine.
    std::fs::create_dir(repo.path().join("real")).unwrap();
    std::fs::write(repo.path().join("real/compose.yaml"), COMPOSE).unwrap();
    symlink(repo.path().join("real"), repo.path().join("inner")).unwrap();

    let results = repo.resolve(&[], "main");
    let err = results[0].as_ref().unwrap_err();
    assert!(
        err.contains("field `working_dir`: \"linked\" resolves to")
            && err.contains("outside the repository"),
        "{err}"
    );
    let err = results[1].as_ref().unwrap_err();
    assert!(
        err.contains("field `compose_files`: \"compose.yaml\" resolves to")
            && err.contains("outside"),
        "{err}"
    );
    let err = results[2].as_ref().unwrap_err();
    assert!(
        err.contains("field") && err.contains("outside the repository"),
        "{err}"
    );
    let ok = results[3].as_ref().unwrap();
    assert_eq!(ok.compose_files, [repo.real("real/compose.yaml")]);
}

#[test]
fn inline_deployments_win_over_the_file() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "name: from-file\n"),
        ("compose.yaml", COMPOSE),
        ("other/compose.yml", COMPOSE),
    ]);
    let mut inline = DeployConfig::new("inline");
    inline.working_dir = "other".to_owned();
    let results = repo.resolve(
        &[inline.clone(), DeployConfig::new("second")],
        "refs/heads/x",
    );
    assert_eq!(results.len(), 2);
    let r = results[0].as_ref().unwrap();
    assert_eq!(r.config.name, "inline");
    assert_eq!(r.compose_files, [repo.real("other/compose.yml")]);
    assert_eq!(r.source_file, None);
    assert_eq!(r.config.reference.as_deref(), Some("refs/heads/x"));

    let dup = repo.resolve(&[inline.clone(), inline], "main");
    let err = dup[1].as_ref().unwrap_err();
    assert!(err.starts_with("inline deployment #2 (deployment \"inline\"): field `name`: duplicate deployment name \"inline\""), "{err}");
    assert!(dup[0].is_ok());
}

#[test]
fn repository_url_deployments_are_left_for_the_caller() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: ext\nrepository_url: https://git.example.com/other.git\nworking_dir: deploy\n",
    )]);
    let r = repo.resolve(&[], "main").remove(0).unwrap();
    assert_eq!(
        r.external_repository.as_deref(),
        Some("https://git.example.com/other.git")
    );
    assert!(r.compose_files.is_empty());

    let other = Repo::new(&[("deploy/compose.yaml", COMPOSE)]);
    let resolved = doco_config::resolve_deployment(r.config, other.path(), r.source_file).unwrap();
    assert_eq!(resolved.compose_files, [other.real("deploy/compose.yaml")]);
}

#[test]
fn auto_discovery_expands_instead_of_failing() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
    ]);
    let entries = repo.load();
    assert!(
        entries[0].as_ref().unwrap().auto_discovery.enabled,
        "no name needed with auto-discovery"
    );
    let r = repo.resolve(&[], "main").remove(0).unwrap();
    assert_eq!(r.config.name, "svc");
    assert!(r.auto_discovered);
}

#[test]
fn hash_is_stable_and_sensitive() {
    let text = "name: a\nenvironment: {Z: '1', A: '2', M: '3'}\nbuild: {args: {y: '1', b: '2'}}\nexternal_secrets: {K: {store_ref: s, remote_ref: {b: 1, a: 2}}}\n";
    let reordered = "external_secrets: {K: {remote_ref: {a: 2, b: 1}, store_ref: s}}\nbuild: {args: {b: '2', y: '1'}}\nenvironment: {M: '3', A: '2', Z: '1'}\nname: a\n";
    let h1 = Repo::new(&[(".doco-cd.yml", text)])
        .load()
        .remove(0)
        .unwrap()
        .hash();
    let h2 = Repo::new(&[(".doco-cd.yml", reordered)])
        .load()
        .remove(0)
        .unwrap()
        .hash();
    assert_eq!(h1, h2, "key order does not change the hash");
    assert_eq!(h1.len(), 64);
    assert!(h1.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(DeployConfig::new("a").hash(), DeployConfig::new("a").hash());
    let mut changed = DeployConfig::new("a");
    changed.timeout = 181;
    assert_ne!(changed.hash(), DeployConfig::new("a").hash());
    let mut warned = DeployConfig::new("a");
    warned.warnings.push("x".to_owned());
    assert_eq!(
        warned.hash(),
        DeployConfig::new("a").hash(),
        "warnings are not part of the hash"
    );
}

#[test]
fn json_round_trip_keeps_the_config() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "name: a\n---\nname: b\ncompose_files: [x.yml]\nreference: v1\n",
    )]);
    for config in repo.load().into_iter().map(Result::unwrap) {
        let json = serde_json::to_string(&config).unwrap();
        let back: DeployConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config, "{json}");
        assert_eq!(back.hash(), config.hash());
    }
}

#[test]
fn a_deployment_on_another_reference_is_left_for_a_checkout_of_that_reference() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".doco-cd.yml"),
        "name: here\n---\nname: there\nreference: refs/heads/dev\nworking_dir: only-on-dev\n---\nname: same\nreference: main\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("compose.yml"), "services: {}\n").unwrap();
    let resolved =
        doco_config::resolve_deployments(&[], dir.path(), "/", "", "refs/heads/main").unwrap();
    let by_name = |name: &str| {
        resolved
            .iter()
            .find_map(|r| r.as_ref().ok().filter(|d| d.config.name == name))
            .unwrap_or_else(|| panic!("{name} missing from {resolved:?}"))
    };
    assert_eq!(by_name("here").other_reference, None);
    assert_eq!(
        by_name("same").other_reference,
        None,
        "main and refs/heads/main are the same"
    );
    let there = by_name("there");
    assert_eq!(there.other_reference.as_deref(), Some("refs/heads/dev"));
    assert!(
        there.compose_files.is_empty(),
        "resolved later, against the dev checkout"
    );
    assert!(doco_config::same_reference("refs/tags/v1", "v1"));
    assert!(!doco_config::same_reference("main", "dev"));
}

#[test]
fn webhook_filter_is_a_regular_expression_on_the_pushed_ref() {
    let mut config = doco_config::DeployConfig::new("web");
    config.webhook_filter = "^refs/heads/(main|release-.*)$".into();
    config.validate().unwrap();
    assert!(config.accepts_webhook_ref("refs/heads/main"));
    assert!(config.accepts_webhook_ref("refs/heads/release-2"));
    assert!(!config.accepts_webhook_ref("refs/heads/dev"));
    assert!(doco_config::DeployConfig::new("any").accepts_webhook_ref("refs/tags/v1"));

    config.webhook_filter = "refs/heads/(".into();
    let error = config.validate().unwrap_err();
    assert_eq!(error.field, "webhook_filter");
    assert!(
        error.message.contains("not a valid regular expression"),
        "{}",
        error.message
    );
}

#[test]
fn auto_discovery_labels_of_both_implementations_parse() {
    use doco_config::AutoDiscoveryConfig;
    let upstream = AutoDiscoveryConfig::from_label(
        "{enabled: true, depth: 2, delete: false, remove_volumes: true, remove_images: false}",
    );
    assert!(
        upstream.enabled && !upstream.delete && upstream.remove_volumes && !upstream.remove_images
    );
    assert_eq!(upstream.depth, 2);
    let ours = AutoDiscoveryConfig::from_label(
        r#"{"enabled":true,"depth":0,"delete":true,"remove_volumes":false,"remove_images":true}"#,
    );
    assert!(ours.delete && !ours.remove_volumes && ours.remove_images);
    for unreadable in ["", "not: [yaml"] {
        let fallback = AutoDiscoveryConfig::from_label(unreadable);
        assert!(
            fallback.delete && !fallback.remove_volumes && fallback.remove_images,
            "{unreadable:?}"
        );
    }
}
