//! Packed weight panels shared by every process on a machine: written once to a file named by
//! a hash of the weight's bytes and the layout, then memory-mapped read-only, so workers that
//! load the same model share one physical copy through the page cache (and a new process skips
//! packing). The file is untrusted: a wrong size, magic, key or checksum is a miss, and the
//! panels are built again and the file replaced (written to a temporary file, then renamed).
//!
//! Layout: `RLXPACK\0` | key hash (32) | payload length in bytes (u64 LE) | payload hash (32) |
//! payload (f32 LE).

use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"RLXPACK\0";
const HEADER: usize = 8 + 32 + 8 + 32;

/// A read-only shared mapping of a panel file's payload.
pub struct Mapped {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and lives until drop; reading it from any thread is fine.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.len)
    }
}

impl Mapped {
    /// The payload's floats.
    pub fn floats(&self) -> &[f32] {
        let n = (self.len - HEADER) / 4;
        // SAFETY: the mapping holds `len` bytes; the payload starts at HEADER (a multiple of 4
        // from a page-aligned base) and holds n floats (checked on open).
        unsafe { std::slice::from_raw_parts((self.base as *const u8).add(HEADER).cast(), n) }
    }

    /// Maps `path` if it holds panels for `key` with an intact payload of `floats` floats.
    fn open(path: &Path, key: &[u8; 32], floats: usize) -> Option<Mapped> {
        use std::os::unix::io::AsRawFd;
        let file = std::fs::File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len != HEADER.checked_add(floats.checked_mul(4)?)? {
            return None;
        }
        // SAFETY: a read-only shared mapping of a regular file of `len` bytes.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let m = Mapped { base, len };
        // SAFETY: the mapping holds len bytes.
        let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
        let ok = &bytes[..8] == MAGIC
            && bytes[8..40] == key[..]
            && bytes[40..48] == ((len - HEADER) as u64).to_le_bytes()
            && bytes[48..80] == *blake3::hash(&bytes[HEADER..]).as_bytes();
        ok.then_some(m)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: base / len are the mapping made in `open`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The panels for `key` from `dir`, building them with `build` and publishing the file when
/// it is missing or damaged. `None` when the directory cannot be used (the caller keeps the
/// panels it built in memory).
pub fn load_or_store(
    dir: &Path,
    key: &[u8; 32],
    floats: usize,
    build: impl FnOnce() -> Option<Vec<f32>>,
) -> Result<Mapped, Option<Vec<f32>>> {
    let path = dir.join(format!("{}.pack", blake3::Hash::from(*key).to_hex()));
    if let Some(m) = Mapped::open(&path, key, floats) {
        return Ok(m);
    }
    let Some(data) = build() else {
        return Err(None);
    };
    let written = write(dir, &path, key, &data).is_ok();
    match written.then(|| Mapped::open(&path, key, floats)).flatten() {
        Some(m) => Ok(m),
        None => Err(Some(data)),
    }
}

fn write(dir: &Path, path: &Path, key: &[u8; 32], data: &[f32]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let payload: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        blake3::Hash::from(*key).to_hex()
    ));
    let publish = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(key)?;
        f.write_all(&(payload.len() as u64).to_le_bytes())?;
        f.write_all(blake3::hash(&payload).as_bytes())?;
        f.write_all(&payload)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    // A failed write leaves nothing behind.
    publish().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
