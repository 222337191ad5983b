//! Helpers shared by doco-cd's test tiers: real git repositories, a local HTTP server for them,
//! and Docker fixtures that clean up after themselves. Used only as a dev-dependency.

pub mod docker;
pub mod docker_proxy;
pub mod git;
pub mod github_api;
pub mod http;
pub mod registry;
pub mod smart_http;
pub mod sshd;
pub mod tls_proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique within this machine's test runs: `<prefix>-<pid>-<counter>`, lower-case and usable as
/// a Compose project name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The workspace root, for scripts that tests call (`scripts/test-image.sh`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("workspace root: {e}"))
}

/// Writes `contents` to `root/rel_path`, creating parent directories.
pub fn write_file(root: &Path, rel_path: &str, contents: &str) {
    let path = root.join(rel_path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::write(&path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Writes each `(rel_path, contents)` under `root` with [`write_file`].
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel_path, contents) in files {
        write_file(root, rel_path, contents);
    }
}

/// Every regular file under `dir`, recursively, with its bytes (for scanning a tree for secrets).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()))
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push((path, bytes));
            }
        }
    }
    out
}

/// The command line of every process on this machine (`/proc/<pid>/cmdline`, NULs as spaces;
/// zombies have an empty one).
pub fn process_cmdlines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap_or_else(|e| panic!("cannot read /proc: {e}"))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect()
}
