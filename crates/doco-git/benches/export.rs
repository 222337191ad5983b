//! The artifact store's costs for a repository of 1,000 files (50 directories × 20 files of about
//! 1 KiB of varied text, plus a `compose.yml`): the sync that clones the bare mirror, then
//! [`GitClient::export`] of the commit into fresh destinations (wall time, git processes per
//! export), the disk an export and the mirror take (sum of file sizes, and blocks actually
//! allocated), and a second commit that changes one file: its fetch, its export and that export's
//! disk use. Every export is a full copy of the tree; nothing is shared between exports.
//!
//! Run: `cargo bench -p doco-git --bench export` (results go in BENCHMARKS.md). Needs `git`, no
//! Docker. `DOCO_BENCH_EXPORTS` changes the number of exports of the first commit (default 20).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use doco_git::{GitClient, GitOptions};
use doco_testkit::git::{BareRepo, WorkTree};

const DIRS: usize = 50;
const FILES_PER_DIR: usize = 20;
const DEFAULT_EXPORTS: u32 = 20;

const WORDS: &[&str] = &[
    "service",
    "image",
    "volume",
    "network",
    "deploy",
    "replica",
    "restart",
    "healthcheck",
    "environment",
    "label",
    "port",
    "secret",
    "config",
    "driver",
    "bridge",
    "overlay",
    "command",
    "entrypoint",
    "interval",
    "timeout",
    "retries",
    "memory",
    "cpus",
    "logging",
    "options",
    "profile",
    "depends_on",
    "condition",
    "healthy",
    "started",
    "build",
    "context",
    "target",
];

/// A deterministic pseudo-random generator (64-bit LCG), so every run writes the same files.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// About 1 KiB (896 to 1151 bytes) of text: lines of words and hex numbers, different per file.
fn text(rng: &mut Lcg) -> String {
    let target = 896 + (rng.next() % 256) as usize;
    let mut out = String::with_capacity(target + 64);
    while out.len() < target {
        let words = 3 + rng.next() % 6;
        for w in 0..words {
            if w > 0 {
                out.push(' ');
            }
            if rng.next().is_multiple_of(4) {
                out.push_str(&format!("{:x}", rng.next()));
            } else {
                out.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
            }
        }
        out.push('\n');
    }
    out.truncate(target - 1);
    out.push('\n');
    out
}

/// What a directory tree takes on disk.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    files: u64,
    dirs: u64,
    /// Sum of the regular files' sizes (`st_size`).
    file_bytes: u64,
    /// Blocks allocated to files, directories and symlinks (`st_blocks × 512`), the tree's root
    /// included.
    allocated: u64,
}

fn usage(root: &Path) -> Usage {
    let mut u = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = std::fs::symlink_metadata(&dir).expect("metadata");
        u.dirs += 1;
        u.allocated += meta.blocks() * 512;
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else {
                if meta.is_file() {
                    u.files += 1;
                    u.file_bytes += meta.len();
                }
                u.allocated += meta.blocks() * 512;
            }
        }
    }
    u
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn spawned() -> u64 {
    doco_process::spawn_counts().values().sum()
}

fn print_usage(what: &str, u: &Usage) {
    println!(
        "| {what} | {} | {} | {:.1} | {:.1} |",
        u.files,
        u.dirs,
        kib(u.file_bytes),
        kib(u.allocated)
    );
}

fn main() {
    let exports: u32 = std::env::var("DOCO_BENCH_EXPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_EXPORTS);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let bare = BareRepo::new();
    let work = WorkTree::clone_from(&bare);
    let mut rng = Lcg(0x0064_6f63_6f2d_6364);
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            work.write(&format!("dir{d:02}/file{f:02}.txt"), &text(&mut rng));
        }
    }
    work.write(
        "compose.yml",
        "services:\n  app:\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
    );
    let first = work.commit_and_push("1,000 files");

    let data = tempfile::tempdir().expect("temp dir");
    let mirror = data.path().join("repos/mirror");
    let artifacts = data.path().join("repos/artifacts");
    let client = GitClient::new(GitOptions::default());
    let url = bare.file_url();

    // The first sync clones the mirror.
    let (spawn0, start) = (spawned(), Instant::now());
    let outcome = runtime
        .block_on(client.sync(&url, "main", &mirror))
        .expect("clone the mirror");
    let clone_time = start.elapsed();
    let clone_spawns = spawned() - spawn0;
    assert_eq!(outcome.commit, first);
    let mirror_first = usage(&mirror);

    // A quiet sync, for scale.
    let (spawn0, start) = (spawned(), Instant::now());
    let outcome = runtime
        .block_on(client.sync(&url, "main", &mirror))
        .expect("quiet sync");
    let quiet_time = start.elapsed();
    let quiet_spawns = spawned() - spawn0;
    assert!(!outcome.fetched);

    // One warm-up export (not counted), then the measured ones, each into a fresh destination.
    runtime
        .block_on(client.export(&url, &mirror, &first, &artifacts.join("warm-up")))
        .expect("warm-up export");
    let mut times = Vec::new();
    let spawn0 = spawned();
    for i in 0..exports {
        let dest = artifacts.join(format!("{first}-{i}"));
        let start = Instant::now();
        runtime
            .block_on(client.export(&url, &mirror, &first, &dest))
            .expect("export");
        times.push(start.elapsed());
    }
    let export_spawns = (spawned() - spawn0) as f64 / f64::from(exports);
    let mean = times.iter().sum::<Duration>() / exports;
    let slowest = times.iter().max().copied().unwrap_or_default();
    let export_first = usage(&artifacts.join(format!("{first}-0")));
    assert_eq!(export_first.files, (DIRS * FILES_PER_DIR + 1) as u64);

    // Removing one export (what the collector does with an old one).
    let start = Instant::now();
    std::fs::remove_dir_all(artifacts.join("warm-up")).expect("remove an export");
    let remove_time = start.elapsed();

    // A second commit that changes one file: the fetch, then a full export of the new tree.
    work.write("dir07/file03.txt", &text(&mut rng));
    let second = work.commit_and_push("one file changed");
    let (spawn0, start) = (spawned(), Instant::now());
    let outcome = runtime
        .block_on(client.sync(&url, "main", &mirror))
        .expect("fetch the second commit");
    let fetch_time = start.elapsed();
    let fetch_spawns = spawned() - spawn0;
    assert!(outcome.fetched && outcome.commit == second);
    let mirror_second = usage(&mirror);
    let dest = artifacts.join(&second);
    let (spawn0, start) = (spawned(), Instant::now());
    runtime
        .block_on(client.export(&url, &mirror, &second, &dest))
        .expect("export the second commit");
    let second_time = start.elapsed();
    let second_spawns = spawned() - spawn0;
    let export_second = usage(&dest);

    let blksize = std::fs::metadata(data.path()).map_or(0, |m| m.blksize());
    println!(
        "exports of the first commit measured: {exports} (after 1 warm-up); block size {blksize} B"
    );
    println!();
    println!("| step | wall (ms) | git processes |");
    println!("|---|---|---|");
    println!(
        "| sync that clones the mirror | {:.1} | {clone_spawns} |",
        ms(clone_time)
    );
    println!(
        "| sync, nothing changed | {:.1} | {quiet_spawns} |",
        ms(quiet_time)
    );
    println!(
        "| export of the 1,000-file commit, mean of {exports} | {:.1} | {export_spawns:.2} |",
        ms(mean)
    );
    println!(
        "| export of the 1,000-file commit, slowest of {exports} | {:.1} | |",
        ms(slowest)
    );
    println!("| removing one export | {:.1} | 0 |", ms(remove_time));
    println!(
        "| sync that fetches the second commit (1 file changed) | {:.1} | {fetch_spawns} |",
        ms(fetch_time)
    );
    println!(
        "| export of the second commit | {:.1} | {second_spawns} |",
        ms(second_time)
    );
    println!();
    println!("| tree | files | directories | file sizes (KiB) | allocated (KiB) |");
    println!("|---|---|---|---|---|");
    print_usage("one export of the first commit", &export_first);
    print_usage("the export of the second commit", &export_second);
    print_usage("the mirror after the clone", &mirror_first);
    print_usage("the mirror after the second fetch", &mirror_second);
    let all = usage(&artifacts);
    print_usage(
        &format!("the artifacts directory: {exports} exports of the first commit, 1 of the second"),
        &all,
    );
}
