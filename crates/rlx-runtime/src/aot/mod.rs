//! `AotCache`: compiled templates and specialized variants persisted on disk, so a new process
//! skips the work a previous one did.
//!
//! The directory is untrusted input and a cache failure never fails a run:
//! - one file per entry, named by the digest of its key (never by user text); the key is echoed
//!   inside the file and compared in full, so a collision or a foreign entry is a miss;
//! - header, lengths and two checksums (see [`format`]) are checked before anything is decoded,
//!   and the decoded module is verified before it is used; a bad entry is removed, counted as
//!   recovered, and rebuilt;
//! - writes go to a unique temp file in the same directory, are fsynced and renamed into place,
//!   so readers never see a partial entry; temp files of writers that died are cleaned later;
//! - entries are plain files: a symlink (or anything else) planted under an entry's name is
//!   removed, never followed;
//! - an unusable directory (read-only, full, missing) is a warning, once; compiled variants
//!   then live in memory only;
//! - with `max_bytes`, the least recently used entries are removed after a write.

pub mod format;
mod graph_file;
mod stored;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rlx_ir::key::{hex, stable_digest};

pub use graph_file::{graph_from_bytes, graph_to_bytes};
pub use stored::{StoredResult, decode_result, encode_result};

/// Entry file extension.
const EXT: &str = "rlx";
/// Temp files of writers that are gone are removed once older than this.
const STALE_TEMP: Duration = Duration::from_secs(600);
/// Entries larger than this are not ours (modules are kilobytes to a few megabytes).
const MAX_ENTRY: u64 = 1 << 32;

/// Counters of one cache, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AotStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries found unusable (truncated, corrupt, foreign, stale, not a plain file), removed
    /// and rebuilt.
    pub recovered: u64,
    pub writes: u64,
    /// Failed writes (read-only or full directory, failed rename); the run went on.
    pub errors: u64,
    /// Entries removed to stay under `max_bytes`.
    pub evictions: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    recovered: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
}

pub struct AotCache {
    /// `None` when the directory is unusable: every lookup misses, nothing is written.
    root: Option<PathBuf>,
    max_bytes: Option<u64>,
    counters: Counters,
    warned: AtomicBool,
}

impl std::fmt::Debug for AotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AotCache")
            .field("root", &self.root)
            .field("max_bytes", &self.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl AotCache {
    /// The cache in `dir` (created if missing). Never fails: an unusable directory gives a
    /// cache that warns once and keeps nothing.
    pub fn open(dir: impl AsRef<Path>, max_bytes: Option<u64>) -> AotCache {
        let dir = dir.as_ref();
        let mut cache = AotCache {
            root: None,
            max_bytes,
            counters: Counters::default(),
            warned: AtomicBool::new(false),
        };
        match fs::create_dir_all(dir).and_then(|()| fs::canonicalize(dir)) {
            Ok(root) if root.is_dir() => {
                cache.root = Some(root);
                cache.clean_stale_temps();
            }
            Ok(root) => cache.warn(&format!("{} is not a directory", root.display())),
            Err(e) => cache.warn(&format!("{}: {e}", dir.display())),
        }
        cache
    }

    /// The resolved directory, when usable.
    pub fn dir(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    pub fn stats(&self) -> AotStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AotStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            recovered: get(&c.recovered),
            writes: get(&c.writes),
            errors: get(&c.errors),
            evictions: get(&c.evictions),
        }
    }

    /// Bytes of the entries on disk now.
    pub fn disk_bytes(&self) -> u64 {
        self.entries().iter().map(|e| e.2).sum()
    }

    fn warn(&self, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!("rlx: AOT cache unusable ({what}); compiled variants stay in memory only");
        }
    }

    fn path_for(&self, key: &str) -> Option<PathBuf> {
        let digest = stable_digest(&["rlx-aot-entry", key]);
        Some(
            self.root
                .as_ref()?
                .join(format!("{}.{EXT}", &hex(&digest)[..32])),
        )
    }

    /// The payload stored under `key`, if an intact entry for exactly that key exists.
    pub fn load(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path_for(key)?;
        match read_entry(&path, key) {
            Ok(Some(payload)) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(payload)
            }
            Ok(None) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(()) => {
                self.discard(&path);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Counts and removes an unusable entry (a symlink is removed itself, never followed; a
    /// directory only when empty).
    pub(crate) fn discard(&self, path: &Path) {
        self.counters.recovered.fetch_add(1, Ordering::Relaxed);
        if let Ok(m) = fs::symlink_metadata(path) {
            let _ = if m.is_dir() {
                fs::remove_dir(path)
            } else {
                fs::remove_file(path)
            };
        }
    }

    /// Discards the entry of `key` (its payload did not decode or verify).
    pub fn discard_key(&self, key: &str) {
        if let Some(path) = self.path_for(key) {
            self.discard(&path);
        }
    }

    /// Stores `payload` under `key`, atomically; failures only warn.
    pub fn store(&self, key: &str, payload: &[u8]) {
        let Some(path) = self.path_for(key) else {
            return;
        };
        match self.write_entry(&path, &format::encode(key, payload)) {
            Ok(()) => {
                self.counters.writes.fetch_add(1, Ordering::Relaxed);
                self.prune();
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.warn(&format!("writing {}: {e}", path.display()));
            }
        }
    }

    fn write_entry(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let root = path.parent().unwrap_or(Path::new("."));
        let temp = root.join(temp_name());
        let result = (|| {
            // create_new: fails on anything already there, a planted symlink included.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            // A directory entry (symlink, directory) where the entry goes is removed first;
            // rename replaces a plain file atomically.
            if let Ok(m) = fs::symlink_metadata(path)
                && !m.file_type().is_file()
            {
                if m.is_dir() {
                    fs::remove_dir(path)
                        .map_err(|_| std::io::Error::other("a directory has the entry's name"))?;
                } else {
                    fs::remove_file(path)?;
                }
            }
            fs::rename(&temp, path)?;
            File::open(root)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Entries on disk: (path, modified, bytes).
    fn entries(&self) -> Vec<(PathBuf, SystemTime, u64)> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let Ok(dir) = fs::read_dir(root) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == EXT))
            .filter_map(|e| {
                let m = fs::symlink_metadata(e.path()).ok()?;
                m.file_type().is_file().then(|| {
                    let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    (e.path(), t, m.len())
                })
            })
            .collect()
    }

    /// Removes least recently used entries until the total is within `max_bytes`.
    fn prune(&self) {
        let Some(limit) = self.max_bytes else {
            return;
        };
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.2).sum();
        entries.sort_by_key(|e| e.1);
        for (path, _, bytes) in entries {
            if total <= limit {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(bytes);
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes temp files older than [`STALE_TEMP`] (left by writers that died mid-write).
    fn clean_stale_temps(&self) {
        let Some(root) = &self.root else {
            return;
        };
        let Ok(dir) = fs::read_dir(root) else {
            return;
        };
        let now = SystemTime::now();
        for e in dir.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let old = fs::symlink_metadata(e.path())
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// `Ok(None)`: no entry. `Err`: an entry that is not usable. The file is opened without
/// following a symlink and without blocking (a FIFO), checked through the open descriptor (a
/// concurrent writer's rename in between is fine: this reads the whole file it opened), and
/// marked recently used through the same descriptor.
fn read_entry(path: &Path, key: &str) -> Result<Option<Vec<u8>>, ()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    let meta = f.metadata().map_err(|_| ())?;
    if !meta.file_type().is_file() || meta.len() > MAX_ENTRY {
        return Err(());
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(meta.len() as usize)
        .map_err(|_| ())?;
    f.read_to_end(&mut bytes).map_err(|_| ())?;
    let payload = format::decode(&bytes, key).map_err(|_| ())?.to_vec();
    // Recently used: pruning removes the oldest modification times first.
    let _ = f.set_modified(SystemTime::now());
    Ok(Some(payload))
}

/// A name no other writer (thread or process) uses at the same time.
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        ".tmp-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
