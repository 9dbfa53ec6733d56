//! Stable keys: a fixed hash (blake3) over canonical text, never std's seeded hasher, so the
//! same inputs give the same key in every process and on every run.

/// The first 8 bytes of blake3 over `parts`, each length-prefixed so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn stable_key(parts: &[&str]) -> u64 {
    let digest = stable_digest(parts);
    u64::from_le_bytes(digest[..8].try_into().expect("blake3 digests are 32 bytes"))
}

/// The full 32-byte digest of `parts` (see [`stable_key`]).
pub fn stable_digest(parts: &[&str]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// blake3 over the compact binary form (postcard) of `value`: a structural hash that sees
/// everything, constants included (the printed IR abbreviates them). `None` if `value` cannot
/// be encoded.
pub fn structural_digest<T: serde::Serialize>(value: &T) -> Option<[u8; 32]> {
    let bytes = postcard::to_allocvec(value).ok()?;
    Some(*blake3::hash(&bytes).as_bytes())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stable_key(&["x"])` when the scheme was fixed.
    const GOLDEN_X: u64 = 0xf38b_b6dd_cc55_dc83;

    #[test]
    fn length_prefix_separates_parts() {
        assert_ne!(stable_key(&["ab", "c"]), stable_key(&["a", "bc"]));
        // A fixed value: the key scheme (blake3, little-endian length prefixes, first 8 bytes)
        // must not change between processes, runs or releases without a format bump.
        assert_eq!(stable_key(&["x"]), GOLDEN_X);
    }
}
