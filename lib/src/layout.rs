//! The replica layout (man/lsw-format.5, "REPLICA LAYOUT"):
//!
//! ```text
//! ROOT/lsw1/<generation: 16 hex>/<segment name>
//! ```
//!
//! `lsw1` is the layout version: a reader that finds only a newer
//! `lswN` refuses with a clear message. Segment names sort in txid order
//! and carry everything a restore plan needs.

use crate::segment::SegmentName;

/// Directory of this layout version under the replica root.
pub const LAYOUT_DIR: &str = "lsw1";
pub const LAYOUT_VERSION: u32 = 1;

/// Generation ids are 64 random bits, written as 16 lowercase hex digits.
pub fn generation_name(generation: u64) -> String {
    format!("{generation:016x}")
}

pub fn parse_generation(s: &str) -> Option<u64> {
    if s.len() != 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// A fresh random generation id.
pub fn new_generation() -> u64 {
    let mut b = [0u8; 8];
    // The OS random source failing is not something to recover from; a
    // time-based fallback still gives distinct ids on one machine.
    if getrandom::fill(&mut b).is_err() {
        let t = crate::time::now_ms() ^ (u64::from(std::process::id()) << 40);
        b = t.to_be_bytes();
    }
    u64::from_be_bytes(b)
}

/// Prefix of one generation's objects.
pub fn generation_prefix(generation: u64) -> String {
    format!("{LAYOUT_DIR}/{}/", generation_name(generation))
}

/// Where a segment lives, relative to the replica root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    pub generation: u64,
    pub name: SegmentName,
}

impl std::fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", generation_prefix(self.generation), self.name)
    }
}

impl SegmentKey {
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(LAYOUT_DIR)?.strip_prefix('/')?;
        let (generation, name) = rest.split_once('/')?;
        Some(SegmentKey {
            generation: parse_generation(generation)?,
            name: SegmentName::parse(name)?,
        })
    }
}
