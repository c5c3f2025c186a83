//! [`TempDir`]: a directory of a test's own (SQLite files), removed when the
//! test ends, passed or failed.

use std::path::{Path, PathBuf};

/// A directory removed (with everything in it) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temporary directory,
    /// named from `prefix` and unique to this call.
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(crate::unique(prefix));
        std::fs::create_dir_all(&dir).expect("the temporary directory can be created");
        TempDir(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
