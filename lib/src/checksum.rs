//! The db checksum: a 64-bit value over the whole database content that
//! can be updated one page at a time.
//!
//! checksum(db) = XOR over pages p in 1..=db_pages of xxh3_64(page p, seed = p)
//!
//! An empty database has checksum 0. XOR makes the value independent of
//! the order pages are visited in, so snapshot parts are hashed in
//! parallel and combined, and a changed page is accounted for by XORing
//! out its old hash and XORing in the new one (see man/lsw-format.5).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Hash of one page image at its page number.
pub fn page_hash(pgno: u32, page: &[u8]) -> u64 {
    xxh3_64_with_seed(page, u64::from(pgno))
}

/// The hash of every page of a database, kept so the db checksum can be
/// updated as pages change, grow or are truncated away.
#[derive(Debug, Clone)]
pub struct PageHashes {
    page_size: u32,
    hashes: Vec<u64>,
    checksum: u64,
}

impl PageHashes {
    pub fn new(page_size: u32) -> Self {
        PageHashes {
            page_size,
            hashes: Vec::new(),
            checksum: 0,
        }
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The db checksum of pages 1..=len().
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Number of pages accounted for.
    pub fn len(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// The hash of page `pgno`, if the database has it.
    pub fn get(&self, pgno: u32) -> Option<u64> {
        self.hashes.get((pgno as usize).checked_sub(1)?).copied()
    }

    /// Every page's hash, page 1 first.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.hashes.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Record page `pgno`'s new content, growing the database if needed.
    /// Pages skipped over when growing count as all-zero pages, which is
    /// what a file extended past its end reads as (SQLite never writes the
    /// lock-byte page, for one).
    pub fn set(&mut self, pgno: u32, page: &[u8]) {
        self.set_hash(pgno, page_hash(pgno, page));
    }

    pub fn set_hash(&mut self, pgno: u32, hash: u64) {
        if pgno > self.len() {
            self.resize(pgno);
        }
        let i = pgno as usize - 1;
        self.checksum ^= self.hashes[i] ^ hash;
        self.hashes[i] = hash;
    }

    /// Set the database size: pages past `pages` drop out of the checksum;
    /// new pages up to `pages` are accounted as all-zero pages.
    pub fn resize(&mut self, pages: u32) {
        let pages = pages as usize;
        while self.hashes.len() > pages {
            let h = self.hashes.pop().unwrap_or(0);
            self.checksum ^= h;
        }
        if self.hashes.len() < pages {
            let zero = vec![0u8; self.page_size as usize];
            for pgno in self.hashes.len() + 1..=pages {
                let h = page_hash(pgno as u32, &zero);
                self.hashes.push(h);
                self.checksum ^= h;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_order_independent_and_updatable() {
        let a = vec![1u8; 512];
        let b = vec![2u8; 512];
        let mut x = PageHashes::new(512);
        x.set(1, &a);
        x.set(2, &b);
        let mut y = PageHashes::new(512);
        y.set(2, &b);
        y.set(1, &a);
        assert_eq!(x.checksum(), y.checksum());
        assert_eq!(x.checksum(), page_hash(1, &a) ^ page_hash(2, &b));
        x.set(1, &b);
        assert_eq!(x.checksum(), page_hash(1, &b) ^ page_hash(2, &b));
        x.resize(1);
        assert_eq!(x.checksum(), page_hash(1, &b));
        x.resize(0);
        assert_eq!(x.checksum(), 0);
    }

    #[test]
    fn growing_accounts_zero_pages() {
        let mut x = PageHashes::new(512);
        x.set(3, &[0u8; 512]);
        x.resize(2);
        let zero = vec![0u8; 512];
        assert_eq!(x.checksum(), page_hash(1, &zero) ^ page_hash(2, &zero));
    }
}
