//! Content-addressed files for large binaries, beside the sled database.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::durability::{create_dir_all_durably, is_temp_name, sync_dir, write_file_durably};
use super::StoreError;

/// Directory (under the blob root) holding content-addressed blobs.
const SHA256_DIR: &str = "sha256";

/// Large binaries (component binaries, compiled artifacts) stored as files.
///
/// Content-addressed blobs live at `<root>/sha256/<first two hex>/<hex>`;
/// other artifacts at caller-chosen relative paths under `<root>` (see
/// [`put_at`](Self::put_at)). Every write is durable when it returns (temp
/// file, fsync, rename, directory fsync), so a caller may record the digest
/// in the key-value store and commit.
///
/// All methods block on file I/O; from async code use the `*_async` variants
/// or `tokio::task::spawn_blocking`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// Hex SHA-256 of `bytes`, the address [`BlobStore::put`] stores them under.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn check_digest(digest: &str) -> Result<(), StoreError> {
    let ok = digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidDigest(digest.to_owned()))
    }
}

fn not_found_as_none<T>(result: io::Result<T>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl BlobStore {
    /// Open (creating durably if needed) a blob store rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        create_dir_all_durably(root)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Durably store `bytes` under their SHA-256 and return the hex digest.
    ///
    /// Idempotent: storing the same bytes again returns the same digest
    /// (re-syncing the existing file rather than rewriting it).
    pub fn put(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = sha256_hex(bytes);
        let path = self.path(&digest)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == bytes.len() as u64 => {
                // Already present. It may be the survivor of a crash between
                // rename and directory fsync, so make sure it is durable
                // before our caller acknowledges anything that refers to it.
                fs::File::open(&path)?.sync_all()?;
                sync_dir(path.parent().unwrap_or(&self.root))?;
            }
            _ => write_file_durably(&path, bytes)?,
        }
        Ok(digest)
    }

    /// Read the blob with hex SHA-256 `digest`, verifying its contents.
    ///
    /// Returns `Ok(None)` if absent and [`StoreError::Corrupt`] if the file
    /// no longer hashes to `digest`.
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(digest)?;
        let Some(bytes) = not_found_as_none(fs::read(&path))? else {
            return Ok(None);
        };
        if sha256_hex(&bytes) != digest {
            return Err(StoreError::Corrupt { path });
        }
        Ok(Some(bytes))
    }

    /// The file path for `digest` (whether or not it exists), e.g. to
    /// memory-map it. Rejects anything that is not 64 lowercase hex digits.
    pub fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        check_digest(digest)?;
        Ok(self.root.join(SHA256_DIR).join(&digest[..2]).join(digest))
    }

    /// Whether a blob with `digest` is stored.
    pub fn contains(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.path(digest)?.is_file())
    }

    /// Durably delete the blob with `digest`; returns whether it existed.
    pub fn remove(&self, digest: &str) -> Result<bool, StoreError> {
        self.remove_file(self.path(digest)?)
    }

    /// Durably write an artifact at `rel_path` under the root (same
    /// guarantees as [`put`](Self::put)) and return its full path.
    ///
    /// `rel_path` must be relative, made of normal components that do not
    /// start with `.`, and must not be inside the content-addressed
    /// `sha256/` directory.
    pub fn put_at(&self, rel_path: impl AsRef<Path>, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.path_at(rel_path)?;
        write_file_durably(&path, bytes)?;
        Ok(path)
    }

    /// Read the artifact at `rel_path`; `Ok(None)` if absent.
    pub fn get_at(&self, rel_path: impl AsRef<Path>) -> Result<Option<Vec<u8>>, StoreError> {
        not_found_as_none(fs::read(self.path_at(rel_path)?))
    }

    /// The validated full path for the artifact at `rel_path`.
    pub fn path_at(&self, rel_path: impl AsRef<Path>) -> Result<PathBuf, StoreError> {
        let rel = rel_path.as_ref();
        let invalid = || StoreError::InvalidPath(rel.display().to_string());
        let mut components = rel.components().peekable();
        if components.peek().is_none() {
            return Err(invalid());
        }
        for (i, c) in components.enumerate() {
            let Component::Normal(name) = c else {
                return Err(invalid());
            };
            let name = name.to_str().ok_or_else(invalid)?;
            if name.starts_with('.') || (i == 0 && name == SHA256_DIR) {
                return Err(invalid());
            }
        }
        Ok(self.root.join(rel))
    }

    /// Durably delete the artifact at `rel_path`; returns whether it existed.
    pub fn remove_at(&self, rel_path: impl AsRef<Path>) -> Result<bool, StoreError> {
        self.remove_file(self.path_at(rel_path)?)
    }

    /// Async [`put`](Self::put), run on the blocking pool.
    pub async fn put_async(&self, bytes: Vec<u8>) -> Result<String, StoreError> {
        let this = self.clone();
        super::run_blocking(move || this.put(&bytes)).await
    }

    /// Async [`get`](Self::get), run on the blocking pool.
    pub async fn get_async(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (this, digest) = (self.clone(), digest.to_owned());
        super::run_blocking(move || this.get(&digest)).await
    }

    fn remove_file(&self, path: PathBuf) -> Result<bool, StoreError> {
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(path.parent().unwrap_or(&self.root))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete temporary files left by writes interrupted by a crash. Only
    /// safe while no writes are in flight (at startup); returns how many
    /// were removed.
    pub(crate) fn remove_stale_temp_files(&self) -> Result<usize, StoreError> {
        fn walk(dir: &Path, removed: &mut usize) -> io::Result<()> {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    walk(&entry.path(), removed)?;
                } else if kind.is_file() && entry.file_name().to_str().is_some_and(is_temp_name) {
                    fs::remove_file(entry.path())?;
                    *removed += 1;
                }
            }
            Ok(())
        }
        let mut removed = 0;
        walk(&self.root, &mut removed)?;
        if removed > 0 {
            tracing::warn!(removed, root = %self.root.display(), "removed stale temporary blob files");
        }
        Ok(removed)
    }
}
