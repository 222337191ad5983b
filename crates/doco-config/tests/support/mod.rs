//! The fixture repository shared by the deploy-config and discovery tests: a temporary directory
//! filled with files. Each test file adds its own `impl Repo` for what it loads or resolves.

use std::path::Path;

pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A temporary directory holding `files` (`(relative path, contents)`).
    pub fn new(files: &[(&str, &str)]) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
        };
        for (path, content) in files {
            repo.write(path, content);
        }
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to `path`, creating parent directories.
    pub fn write(&self, path: &str, content: &str) {
        doco_testkit::write_file(self.path(), path, content);
    }
}
