//! The entry file: a fixed header, the key echoed in full, then the payload.
//!
//! ```text
//! magic "RLXAOT\0\n" | format u32 | key length u32 | payload length u64 | blake3(payload) [32]
//! | blake3(header fields + key) [32] | key (utf-8) | payload
//! ```
//! Every number is little-endian. A reader trusts nothing: lengths are checked against the file,
//! the key against the one asked for, both checksums against the bytes.

pub const MAGIC: &[u8; 8] = b"RLXAOT\0\n";
/// Bumped whenever the layout or the payload encoding changes.
pub const FORMAT: u32 = 2;
const FIXED: usize = 8 + 4 + 4 + 8 + 32 + 32;
/// Keys are short text; anything longer is not ours.
const MAX_KEY: usize = 1 << 16;

/// Why an entry was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    Truncated,
    Magic,
    Format(u32),
    Key,
    Checksum,
}

pub fn encode(key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + key.len() + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    let head = header_sum(&out, key.as_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn header_sum(fields: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(fields);
    h.update(key);
    *h.finalize().as_bytes()
}

/// The payload of `bytes` if it is a whole, intact entry for exactly `key`.
pub fn decode<'a>(bytes: &'a [u8], key: &str) -> Result<&'a [u8], Reject> {
    if bytes.len() < FIXED {
        return Err(Reject::Truncated);
    }
    if &bytes[..8] != MAGIC {
        return Err(Reject::Magic);
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
    let format = u32_at(8);
    if format != FORMAT {
        return Err(Reject::Format(format));
    }
    let key_len = u32_at(12) as usize;
    let payload_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or([0; 8]));
    let total = usize::try_from(payload_len)
        .ok()
        .filter(|_| key_len <= MAX_KEY)
        .and_then(|p| p.checked_add(FIXED + key_len));
    match total {
        Some(t) if t == bytes.len() => {}
        Some(t) if t > bytes.len() => return Err(Reject::Truncated),
        _ => return Err(Reject::Checksum),
    }
    let stored_key = &bytes[FIXED..FIXED + key_len];
    if header_sum(&bytes[..FIXED - 32], stored_key) != bytes[FIXED - 32..FIXED] {
        return Err(Reject::Checksum);
    }
    if stored_key != key.as_bytes() {
        return Err(Reject::Key);
    }
    let payload = &bytes[FIXED + key_len..];
    if blake3::hash(payload).as_bytes() != &bytes[24..56] {
        return Err(Reject::Checksum);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_and_flip_is_rejected() {
        let entry = encode("k=1", b"payload bytes");
        assert_eq!(decode(&entry, "k=1"), Ok(&b"payload bytes"[..]));
        assert_eq!(decode(&entry, "k=2"), Err(Reject::Key));
        for cut in 0..entry.len() {
            assert!(decode(&entry[..cut], "k=1").is_err(), "cut at {cut}");
        }
        for i in 0..entry.len() {
            for bit in 0..8 {
                let mut e = entry.clone();
                e[i] ^= 1 << bit;
                assert!(decode(&e, "k=1").is_err(), "byte {i} bit {bit}");
            }
        }
        let mut longer = entry.clone();
        longer.push(0);
        assert!(decode(&longer, "k=1").is_err());
    }
}
