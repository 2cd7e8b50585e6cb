//! Prints the worked example of man/lsw-format.5 as hex: the frame stream
//! and the segment file of an empty database (`cargo run -p lsw --example
//! worked_example`). The spec's test decodes what the spec prints.

use lsw::frames::{Frame, FrameWriter};
use lsw::segment::{self, SegmentHeader, SegmentKind};

fn hex(bytes: &[u8]) {
    for (i, line) in bytes.chunks(16).enumerate() {
        let h: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        println!("{:04x}  {}", i * 16, h.join(" "));
    }
}

fn main() {
    let mut w = FrameWriter::new(Vec::new()).unwrap();
    w.write(&Frame::Generation { generation: 0x0123456789abcdef, page_size: 4096 }).unwrap();
    w.write(&Frame::Snapshot { txid: 1, db_pages: 0, timestamp_ms: 1_795_623_750_123 }).unwrap();
    w.write(&Frame::Commit { txid: 1, db_pages: 0, timestamp_ms: 1_795_623_750_123, checksum_after: 0 }).unwrap();
    w.end().unwrap();
    println!("frame stream:");
    hex(&w.finish().unwrap());
    let header = SegmentHeader {
        kind: SegmentKind::Snapshot,
        generation: 0x0123456789abcdef,
        min_txid: 1,
        max_txid: 1,
        page_size: 4096,
        db_pages: 0,
        first_ts_ms: 1_795_623_750_123,
        last_ts_ms: 1_795_623_750_123,
        checksum_before: 0,
        checksum_after: 0,
        part: 0,
        parts: 1,
        page_count: 0,
        first_pgno: 0,
    };
    let (header, bytes) = segment::encode(header, std::iter::empty(), 3).unwrap();
    println!("segment {}:", header.name());
    hex(&bytes);
}
