//! Consecutive transactions folded into one: the last version of each
//! page they wrote and the size they left the database at, so that
//! applying the fold equals applying them in order. Capture folds the
//! commits of a pass, the segmenter the transactions of a segment, the
//! compactor a run of segments; all three rest on this one rule.

use std::collections::BTreeMap;

#[derive(Debug)]
pub struct MergedPages {
    page_size: u32,
    db_pages: u32,
    pages: BTreeMap<u32, Vec<u8>>,
}

impl MergedPages {
    /// The first transaction: the pages it wrote (a page written twice:
    /// the last version) and the database's size after it.
    pub fn new(page_size: u32, pages: impl IntoIterator<Item = (u32, Vec<u8>)>, db_pages: u32) -> Self {
        let mut merged = MergedPages {
            page_size,
            db_pages,
            pages: pages.into_iter().collect(),
        };
        merged.pages.split_off(&(db_pages + 1));
        merged
    }

    /// Apply the next transaction on top. Its pages win; pages past its
    /// size go; and a page it adds to the database without writing it is
    /// all zeros, as applying the two in order (truncate, then extend the
    /// file) leaves it. Pages past the size are never held, so every page
    /// above the previous size is this transaction's or a zero page.
    pub fn apply(&mut self, pages: impl IntoIterator<Item = (u32, Vec<u8>)>, db_pages: u32) {
        let before = self.db_pages;
        self.pages.extend(pages);
        for pgno in before + 1..=db_pages {
            self.pages.entry(pgno).or_insert_with(|| vec![0; self.page_size as usize]);
        }
        self.pages.split_off(&(db_pages + 1));
        self.db_pages = db_pages;
    }

    /// The database's size after the last transaction.
    pub fn db_pages(&self) -> u32 {
        self.db_pages
    }

    /// Bytes of pages held.
    pub fn bytes(&self) -> usize {
        self.pages.len() * self.page_size as usize
    }

    /// The pages held, in page order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.pages.iter().map(|(pgno, data)| (*pgno, data.as_slice()))
    }

    pub fn into_pages(self) -> BTreeMap<u32, Vec<u8>> {
        self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(b: u8) -> Vec<u8> {
        vec![b; 512]
    }

    fn held(m: &MergedPages) -> Vec<(u32, u8)> {
        m.iter().map(|(p, d)| (p, d[0])).collect()
    }

    #[test]
    fn last_version_wins_and_a_page_written_twice_is_held_once() {
        let mut m = MergedPages::new(512, [(2, page(1)), (2, page(2))], 3);
        m.apply([(3, page(3)), (2, page(4))], 3);
        assert_eq!(held(&m), [(2, 4), (3, 3)]);
    }

    #[test]
    fn a_shrink_drops_pages_and_a_regrowth_without_writing_reads_as_zeros() {
        let mut m = MergedPages::new(512, [(4, page(4)), (5, page(5))], 5);
        m.apply([(1, page(1))], 3);
        assert_eq!(held(&m), [(1, 1)]);
        m.apply([(5, page(9))], 6);
        assert_eq!(held(&m), [(1, 1), (4, 0), (5, 9), (6, 0)]);
        assert_eq!((m.db_pages(), m.bytes()), (6, 4 * 512));
    }
}
