//! What recording a change costs the data volume as the number of repositories grows: the bytes one
//! repository's change writes with one state file per repository (this build), against the bytes the
//! single state file of earlier builds rewrote for the same change, and the time of one save. 50
//! repositories × 4 deployments × 2 services, with labels of the size doco-cd writes.
//!
//! Run: `cargo bench -p doco-engine --bench state_write` (results go in BENCHMARKS.md).

use std::collections::BTreeMap;
use std::time::Instant;

use doco_engine::state::{
    DeploymentRecord, RepositoryState, STATE_VERSION, ServiceRecord, State, StateStore,
    repository_key,
};

const SAVES: u32 = 200;

fn labels(deployment: &str, commit: &str) -> BTreeMap<String, String> {
    doco_engine::labels::fresh_labels(&doco_engine::labels::LabelContext {
        deployment,
        commit,
        reference: "refs/heads/main",
        working_dir: "/data/git.example.com/ops/stacks/artifacts/0123456789abcdef0123456789abcdef01234567/app",
        target: "",
        config_hash: "5f0c3a8e7b9d2f1e4a6c8b0d2e4f6a8c0b2d4f6e8a0c2e4f6a8b0d2f4e6a8c0b",
        compose_hash: "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
        source_name: "ops/stacks",
        source_url: "https://git.example.com/ops/stacks.git",
        auto_discovery_config: "{\"enabled\":false,\"depth\":0,\"delete\":false}",
        auto_discovered: false,
        timestamp: "2026-11-30T12:00:00Z",
        trigger: "poll",
    })
}

fn repository(index: usize, commit: &str) -> RepositoryState {
    let deployments = (0..4)
        .map(|d| {
            let name = format!("stack-{index}-{d}");
            let services = ["web", "worker"]
                .into_iter()
                .map(|s| {
                    let record = ServiceRecord {
                        fingerprint: "f".repeat(64),
                        labels: labels(&name, commit),
                        must_run: true,
                        replicas: 1,
                        compose_hash: Some("c".repeat(64)),
                        live_hash: None,
                    };
                    (s.to_string(), record)
                })
                .collect();
            let record = DeploymentRecord {
                project: name.clone(),
                commit: commit.to_string(),
                config_hash: "h".repeat(64),
                deployed_unix: 1_764_504_000,
                reconciliation: None,
                context: String::new(),
                origin: None,
                services,
            };
            (name, record)
        })
        .collect();
    RepositoryState {
        url: format!("https://git.example.com/ops/stacks-{index}.git"),
        reference: "refs/heads/main".into(),
        target: String::new(),
        source_dir: format!("/data/git.example.com/ops/stacks-{index}").into(),
        commit: commit.to_string(),
        last_success_unix: 1_764_504_000,
        deployments,
    }
}

fn main() {
    let first = "a".repeat(40);
    let mut state = State {
        version: STATE_VERSION,
        repositories: (0..50)
            .map(|i| {
                let key = repository_key(&format!("git.example.com/ops/stacks-{i}"), "main");
                (key, repository(i, &first))
            })
            .collect(),
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = StateStore::new(dir.path());
    store.save(&state).expect("first save");
    let whole = serde_json::to_vec_pretty(&state).expect("json").len();
    let one_file = std::fs::read_dir(dir.path().join("state"))
        .expect("state directory")
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let key = state
        .repositories
        .keys()
        .next()
        .cloned()
        .expect("a repository");
    let started = Instant::now();
    for n in 0..SAVES {
        let commit = format!("{n:040x}");
        state
            .repositories
            .insert(key.clone(), repository(0, &commit));
        store.save(&state).expect("save");
    }
    let per_save = started.elapsed().as_secs_f64() * 1e3 / f64::from(SAVES);
    println!(
        "| repositories × deployments | bytes written per change, one file per repository | bytes the single state file rewrote per change | time per save (ms, fsync included) |"
    );
    println!("|---|---|---|---|");
    println!("| 50 × 4 | {one_file} | {whole} | {per_save:.2} |");
}
