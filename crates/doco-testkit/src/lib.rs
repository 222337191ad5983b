//! Helpers shared by doco-cd's test tiers: real git repositories, a local HTTP server for them,
//! and Docker fixtures that clean up after themselves. Used only as a dev-dependency.

pub mod docker;
pub mod git;
pub mod github_api;
pub mod http;
pub mod smart_http;
pub mod sshd;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique within this machine's test runs: `<prefix>-<pid>-<counter>`, lower-case and usable as
/// a Compose project name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The workspace root, for scripts that tests call (`scripts/test-image.sh`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("workspace root: {e}"))
}
