//! Auto-discovery over fixture repositories: which directories become deployments (depth,
//! ignored and symlinked directories, directories without compose files), their names and paths,
//! nested overrides (merge rules, explicit false/0, non-overridable fields, documents) and the
//! error messages.
#![allow(clippy::unwrap_used)]

use doco_config::{DeployConfig, ResolvedDeployment, discover_deployments, resolve_deployments};

const COMPOSE: &str = "services:\n  app:\n    image: busybox\n";

mod support;

use support::Repo;

impl Repo {
    fn resolve(&self) -> Vec<Result<ResolvedDeployment, String>> {
        self.resolve_inline(&[])
    }

    fn resolve_inline(&self, inline: &[DeployConfig]) -> Vec<Result<ResolvedDeployment, String>> {
        resolve_deployments(inline, self.path(), "/", "", "refs/heads/main")
            .unwrap()
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    fn only(&self) -> ResolvedDeployment {
        let mut all = self.resolve();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0).unwrap()
    }

    fn only_error(&self) -> String {
        let mut all = self.resolve();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0).unwrap_err()
    }
}

/// `name@working_dir` of every entry, `ERR <message>` for errors.
fn summary(entries: &[Result<ResolvedDeployment, String>]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match e {
            Ok(d) => format!("{}@{}", d.config.name, d.config.working_dir),
            Err(e) => format!("ERR {e}"),
        })
        .collect()
}

/// A tree used by the depth table: compose files at depths 1, 2 and 3, plus directories that
/// must never be picked.
const TREE: &[(&str, &str)] = &[
    ("web/compose.yaml", COMPOSE),
    ("web/nested/docker-compose.yml", COMPOSE),
    ("web/nested/deeper/compose.yml", COMPOSE),
    ("db/docker-compose.yaml", COMPOSE),
    ("docs/README.md", "no compose file here\n"),
    (
        "docs/compose.yaml/keep",
        "a directory named like a compose file\n",
    ),
    ("node_modules/pkg/compose.yaml", COMPOSE),
    (".git/compose.yaml", COMPOSE),
    (".github/compose.yaml", COMPOSE),
    (".idea/compose.yaml", COMPOSE),
    (".vscode/compose.yaml", COMPOSE),
    ("other/compose.yaml.bak", COMPOSE),
];

#[test]
fn depth_table() {
    let cases: &[(&str, &[&str])] = &[
        (
            "auto_discovery: true",
            &[
                "db@db",
                "web@web",
                "nested@web/nested",
                "deeper@web/nested/deeper",
            ],
        ),
        (
            "auto_discovery: {enabled: true, depth: 0}",
            &[
                "db@db",
                "web@web",
                "nested@web/nested",
                "deeper@web/nested/deeper",
            ],
        ),
        (
            "auto_discovery: {enabled: true, depth: 1}",
            &["db@db", "web@web"],
        ),
        (
            "auto_discovery: {enabled: true, depth: 2}",
            &["db@db", "web@web", "nested@web/nested"],
        ),
        (
            "auto_discovery: {enabled: true}\nworking_dir: web",
            &["web@web", "nested@web/nested", "deeper@web/nested/deeper"],
        ),
        (
            "auto_discovery: {enabled: true, depth: 1}\nworking_dir: web/nested",
            &["nested@web/nested", "deeper@web/nested/deeper"],
        ),
        (
            "auto_discovery: {enabled: true}\ncompose_files: [docker-compose.yml]",
            &["nested@web/nested"],
        ),
        ("auto_discovery: {enabled: false}\nname: plain", &["ERR"]),
    ];
    for (doc, expected) in cases {
        let mut files = TREE.to_vec();
        files.push((".doco-cd.yml", doc));
        let repo = Repo::new(&files);
        let got = summary(&repo.resolve());
        let got: Vec<String> = got
            .into_iter()
            .map(|s| {
                if s.starts_with("ERR") {
                    "ERR".to_owned()
                } else {
                    s
                }
            })
            .collect();
        assert_eq!(&got, expected, "for {doc:?}");
    }
}

#[test]
fn discovered_deployments_inherit_the_template_and_are_marked() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "auto_discovery: {enabled: true, delete: true}\nreference: main\nenvironment: {BASE: root}\nprofiles: [prod]\ntimeout: 30\n",
        ),
        ("a/compose.yaml", COMPOSE),
        ("a/.env", "X=1\n"),
    ]);
    let d = repo.only();
    assert!(d.auto_discovered);
    assert_eq!(d.config.name, "a");
    assert_eq!(d.config.reference.as_deref(), Some("main"));
    assert_eq!(d.config.environment["BASE"], "root");
    assert_eq!(d.config.profiles, ["prod"]);
    assert_eq!(d.config.timeout, 30);
    assert!(d.config.auto_discovery.delete);
    let root = repo.path().canonicalize().unwrap();
    assert_eq!(d.working_dir, root.join("a"));
    assert_eq!(d.compose_files, [root.join("a/compose.yaml")]);
    assert_eq!(d.env_files, [root.join("a/.env")]);
    assert_eq!(
        d.source_file.as_deref(),
        Some(repo.path().join(".doco-cd.yml").as_path())
    );
}

#[test]
fn reference_defaults_to_the_poll_reference() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("a/compose.yaml", COMPOSE),
    ]);
    assert_eq!(
        repo.only().config.reference.as_deref(),
        Some("refs/heads/main")
    );
}

#[test]
fn explicit_deployments_are_kept_beside_discovered_ones() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "name: proxy\nworking_dir: infra\n---\nauto_discovery: true\nworking_dir: apps\n",
        ),
        ("infra/compose.yaml", COMPOSE),
        ("apps/one/compose.yaml", COMPOSE),
        ("apps/two/compose.yaml", COMPOSE),
    ]);
    let all = repo.resolve();
    assert_eq!(
        summary(&all),
        ["proxy@infra", "one@apps/one", "two@apps/two"]
    );
    assert!(!all[0].as_ref().unwrap().auto_discovered);
    assert!(all[1].as_ref().unwrap().auto_discovered);
}

#[test]
fn root_directory_takes_the_template_name() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "name: site\nauto_discovery: true\n"),
        ("compose.yaml", COMPOSE),
        ("extra/compose.yaml", COMPOSE),
    ]);
    assert_eq!(summary(&repo.resolve()), ["site@.", "extra@extra"]);

    let unnamed = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("compose.yaml", COMPOSE),
    ]);
    let d = unnamed.only();
    let dir_name = unnamed.path().file_name().unwrap().to_string_lossy();
    assert_eq!(
        d.config.name, dir_name,
        "without a template name: the directory's"
    );
}

#[test]
fn no_compose_file_anywhere_gives_no_deployment() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("a/readme.md", "x"),
    ]);
    assert!(repo.resolve().is_empty());
}

#[test]
fn symlinked_directories_are_not_entered() {
    let outside = Repo::new(&[("evil/compose.yaml", COMPOSE)]);
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("a/compose.yaml", COMPOSE),
    ]);
    std::os::unix::fs::symlink(outside.path().join("evil"), repo.path().join("link")).unwrap();
    std::os::unix::fs::symlink(repo.path().join("a"), repo.path().join("alias")).unwrap();
    assert_eq!(summary(&repo.resolve()), ["a@a"]);
}

#[test]
fn duplicate_discovered_names_are_errors() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("x/app/compose.yaml", COMPOSE),
        ("y/app/compose.yaml", COMPOSE),
    ]);
    let all = summary(&repo.resolve());
    assert_eq!(all[0], "app@x/app");
    assert!(
        all[1].contains("duplicate deployment name \"app\"")
            && all[1].contains("\"y/app\"")
            && all[1].contains("\"x/app\""),
        "{all:?}"
    );
}

#[test]
fn nested_override_merges_like_upstream() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "auto_discovery: true\n\
             environment: {BASE: root, SHARED: base}\n\
             external_secrets: {BASE_SECRET: base-ref}\n\
             build: {args: {A: '1'}, quiet: true}\n\
             profiles: [base]\n\
             env_files: [.env]\n\
             reconciliation: {restart_limit: 5, restart_window: 300, events: [die]}\n\
             destroy: {enabled: false, remove_volumes: true}\n\
             swarm: {config_retention: 3}\n\
             oci: {verify: true}\n",
        ),
        ("svc/compose.yaml", COMPOSE),
        ("svc/extra.env", "E=1\n"),
        (
            "svc/.doco-cd.yml",
            "environment: {EXTRA: hello, SHARED: nested}\n\
             external_secrets: {MY_SECRET: op://vault/item/field}\n\
             build: {args: {B: '2'}}\n\
             profiles: [nested]\n\
             env_files: [extra.env]\n\
             reconciliation: {restart_limit: 10}\n\
             destroy: true\n\
             swarm: {secret_retention: -1}\n\
             oci: {ignore_tlog: true}\n\
             timeout: 60\n",
        ),
    ]);
    let c = repo.only().config;
    assert_eq!(c.name, "svc");
    assert_eq!(c.environment["BASE"], "root", "maps merge key by key");
    assert_eq!(c.environment["EXTRA"], "hello");
    assert_eq!(c.environment["SHARED"], "nested", "the nested value wins");
    assert_eq!(c.external_secrets["BASE_SECRET"], "base-ref");
    assert_eq!(c.external_secrets["MY_SECRET"], "op://vault/item/field");
    assert_eq!(c.build.args.len(), 2);
    assert!(c.build.quiet, "objects merge field by field");
    assert_eq!(c.profiles, ["nested"], "non-empty lists replace");
    assert_eq!(c.env_files, ["extra.env"]);
    assert_eq!(c.reconciliation.restart_limit, 10);
    assert_eq!(c.reconciliation.restart_window, 300);
    assert_eq!(c.reconciliation.events, ["die"]);
    assert!(c.destroy.enabled, "`destroy: true` sets enabled only");
    assert!(c.destroy.remove_volumes);
    assert_eq!(c.swarm.config_retention, Some(3));
    assert_eq!(c.swarm.secret_retention, Some(-1));
    assert_eq!(
        c.oci,
        serde_json::json!({"verify": true, "ignore_tlog": true})
    );
    assert_eq!(c.timeout, 60);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn nested_environment_only_keeps_compose_files() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "auto_discovery: true\ncompose_files: [test.compose.yaml]\n",
        ),
        ("svc/test.compose.yaml", COMPOSE),
        ("svc/.doco-cd.yml", "environment:\n  SUB: nested\n"),
    ]);
    let d = repo.only();
    assert_eq!(d.config.compose_files, ["test.compose.yaml"]);
    assert_eq!(d.config.environment["SUB"], "nested");
}

/// Upstream drops an explicit `false` or `0` in a nested file; we honour it.
#[test]
fn explicit_false_and_zero_are_honoured() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "auto_discovery: true\nforce_recreate: true\ntimeout: 90\nbuild: {no_cache: true}\n\
             reconciliation: {restart_limit: 5, restart_window: 300}\n",
        ),
        ("svc/compose.yaml", COMPOSE),
        (
            "svc/.doco-cd.yml",
            "remove_orphans: false\nprune_images: false\nwait_running_jobs: false\n\
             force_recreate: false\ntimeout: 0\nbuild: {no_cache: false}\n\
             reconciliation: {enabled: false, restart_limit: 0}\ndestroy: {remove_images: false}\n\
             webhook_filter: ''\n",
        ),
    ]);
    let c = repo.only().config;
    assert!(!c.remove_orphans);
    assert!(!c.prune_images);
    assert!(!c.wait_running_jobs);
    assert!(!c.force_recreate);
    assert_eq!(c.timeout, 0);
    assert!(!c.build.no_cache);
    assert!(!c.reconciliation.enabled);
    assert_eq!(c.reconciliation.restart_limit, 0);
    assert_eq!(c.reconciliation.restart_window, 300);
    assert!(!c.destroy.remove_images);
    assert!(
        c.destroy.remove_volumes,
        "absent fields keep the inherited value"
    );
}

#[test]
fn reconciliation_false_shorthand_in_nested_file() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/.doco-cd.yml", "reconciliation: false\n"),
    ]);
    let c = repo.only().config;
    assert!(!c.reconciliation.enabled);
    assert_eq!(c.reconciliation.events, ["unhealthy"]);
}

#[test]
fn empty_lists_do_not_override_and_are_reported() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\nprofiles: [base]\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/.doco-cd.yml", "profiles: []\n"),
    ]);
    let c = repo.only().config;
    assert_eq!(c.profiles, ["base"]);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("field `profiles`: an empty list does not override")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn non_overridable_fields_are_ignored_with_a_warning_each() {
    let repo = Repo::new(&[
        (
            ".doco-cd.yml",
            "auto_discovery: {enabled: true, depth: 3}\nreference: main\n",
        ),
        ("svc/compose.yaml", COMPOSE),
        (
            "svc/.doco-cd.yml",
            "reference: v2\nrepository_url: https://example.com/other.git\n\
             auto_discovery: false\ngit_depth: 5\nsource: oci\n",
        ),
    ]);
    let d = repo.only();
    let c = &d.config;
    assert_eq!(c.reference.as_deref(), Some("main"));
    assert_eq!(c.repository_url, None);
    assert_eq!(d.external_repository, None);
    assert!(c.auto_discovery.enabled);
    assert_eq!(c.auto_discovery.depth, 3);
    assert_eq!(c.git_depth, 0);
    assert_eq!(c.source, "git");
    for field in [
        "reference",
        "repository_url",
        "auto_discovery",
        "git_depth",
        "source",
    ] {
        let expected = format!(
            "field `{field}` cannot be overridden by a nested deploy config and is ignored"
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains(&expected) && w.contains("svc/.doco-cd.yml")),
            "{field}: {:?}",
            c.warnings
        );
    }
}

#[test]
fn nested_name_and_compose_files_override() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/prod.yml", COMPOSE),
        (
            "svc/.doco-cd.yml",
            "name: renamed\ncompose_files: [compose.yaml, prod.yml]\n",
        ),
    ]);
    let d = repo.only();
    assert_eq!(d.config.name, "renamed");
    assert_eq!(d.compose_files.len(), 2);
    assert!(d.config.compose_files_customized);
}

#[test]
fn yaml_is_preferred_over_yml_for_nested_files() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/.doco-cd.yaml", "environment: {FROM: yaml}\n"),
        ("svc/.doco-cd.yml", "environment: {FROM: yml}\n"),
    ]);
    assert_eq!(repo.only().config.environment["FROM"], "yaml");
}

#[test]
fn trailing_empty_document_is_accepted() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/.doco-cd.yml", "---\nenvironment: {A: b}\n---\n"),
    ]);
    assert_eq!(repo.only().config.environment["A"], "b");
    let empty = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/.doco-cd.yml", "# nothing yet\n"),
    ]);
    assert_eq!(empty.only().config.name, "svc");
}

#[test]
fn nested_unknown_keys_are_warned_with_a_suggestion() {
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
        ("svc/.doco-cd.yml", "enviroment: {A: b}\n"),
    ]);
    let c = repo.only().config;
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("svc/.doco-cd.yml") && w.contains("did you mean `environment`?")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn inline_deployments_expand_too() {
    let repo = Repo::new(&[("one/compose.yaml", COMPOSE), ("two/compose.yaml", COMPOSE)]);
    let mut template = DeployConfig::default();
    template.auto_discovery.enabled = true;
    assert_eq!(
        summary(&repo.resolve_inline(&[template])),
        ["one@one", "two@two"]
    );
}

#[test]
fn repository_url_templates_are_expanded_by_the_caller() {
    let repo = Repo::new(&[(
        ".doco-cd.yml",
        "auto_discovery: true\nrepository_url: https://example.com/stacks.git\n",
    )]);
    let d = repo.only();
    assert_eq!(
        d.external_repository.as_deref(),
        Some("https://example.com/stacks.git")
    );
    assert!(!d.auto_discovered);
    let other = Repo::new(&[("a/compose.yaml", COMPOSE)]);
    let expanded = discover_deployments(&d.config, other.path(), d.source_file.as_deref());
    let expanded: Vec<_> = expanded
        .into_iter()
        .map(|e| e.map_err(|e| e.to_string()))
        .collect();
    assert_eq!(summary(&expanded), ["a@a"]);
    let err = doco_config::resolve_deployment(d.config, other.path(), None).unwrap_err();
    assert!(err.to_string().contains("discover_deployments"), "{err}");
}

/// Each error names the file (and line and column when the YAML parser knows them).
#[test]
fn error_messages() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "name: a\n---\nname: b\n"),
            ],
            &[
                "svc/.doco-cd.yml document 2 (deployment \"svc\")",
                "a nested deploy config must hold exactly one document, this one holds 2",
            ],
        ),
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "environment: [a, b\n"),
            ],
            &["svc/.doco-cd.yml: line ", "invalid YAML"],
        ),
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "\ntimeout: soon\n"),
            ],
            &[
                "svc/.doco-cd.yml (deployment \"svc\") line 2 column",
                "field `timeout`",
            ],
        ),
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "- a\n- b\n"),
            ],
            &[
                "svc/.doco-cd.yml",
                "expected a mapping of deployment settings to override",
            ],
        ),
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "compose_files: [missing.yml]\n"),
            ],
            &[
                "svc/.doco-cd.yml (deployment \"svc\")",
                "field `compose_files`: \"missing.yml\" does not exist in working_dir \"svc\"",
            ],
        ),
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "reconciliation: {events: [explode]}\n"),
            ],
            &["field `reconciliation.events`: unsupported event \"explode\""],
        ),
        (
            &[
                (".doco-cd.yml", "auto_discovery: true\n"),
                ("svc/compose.yaml", COMPOSE),
                ("svc/.doco-cd.yml", "env_files: [../../outside.env]\n"),
            ],
            &["field `env_files`: \"../../outside.env\" escapes the repository"],
        ),
        (
            &[(
                ".doco-cd.yml",
                "auto_discovery: true\nworking_dir: nowhere\n",
            )],
            &[
                ".doco-cd.yml document 1",
                "field `working_dir`: \"nowhere\" does not exist in the repository (auto-discovery starts there)",
            ],
        ),
    ];
    for (files, fragments) in cases {
        let repo = Repo::new(files);
        let err = repo.only_error();
        for fragment in *fragments {
            assert!(err.contains(fragment), "{fragment:?} not in {err:?}");
        }
    }
}

#[test]
fn nested_symlink_outside_is_refused() {
    let outside = Repo::new(&[("x.yml", "environment: {A: b}\n")]);
    let repo = Repo::new(&[
        (".doco-cd.yml", "auto_discovery: true\n"),
        ("svc/compose.yaml", COMPOSE),
    ]);
    std::os::unix::fs::symlink(
        outside.path().join("x.yml"),
        repo.path().join("svc/.doco-cd.yml"),
    )
    .unwrap();
    let err = repo.only_error();
    assert!(err.contains("outside the repository"), "{err}");
}
