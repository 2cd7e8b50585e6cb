//! man/lsw-format.5 is the normative spec: its worked example must decode
//! to what its text says, and its layout tables must agree with the code.

use lsw::frames::{Frame, FrameReader, FrameWriter};
use lsw::segment::{Segment, SegmentKind, HEADER_LEN, TRAILER_LEN};

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/lsw-format.5")).unwrap()
}

/// The bytes of the hex dump that follows the line `label`.
fn hex_block(spec: &str, label: &str) -> Vec<u8> {
    let start = spec.find(&format!("\n{label}\n")).unwrap_or_else(|| panic!("no {label:?} block in the spec"));
    let mut bytes = Vec::new();
    for line in spec[start + label.len() + 2..].lines() {
        if line.starts_with('.') {
            break;
        }
        let (offset, hex) = line.split_once("  ").expect("offset then bytes");
        assert_eq!(usize::from_str_radix(offset, 16).unwrap(), bytes.len(), "offset column of {line:?}");
        bytes.extend(hex.split(' ').map(|b| u8::from_str_radix(b, 16).unwrap()));
    }
    bytes
}

#[test]
fn worked_example_frame_stream_decodes_and_reencodes() {
    let bytes = hex_block(&spec(), "frame stream:");
    let mut r = FrameReader::open(&bytes[..], "spec").unwrap();
    let mut frames = Vec::new();
    while let Some(f) = r.next().unwrap() {
        frames.push(f);
    }
    let ts = 1_795_623_750_123; // 2026-11-25T16:22:30.123Z
    let expected = vec![
        Frame::Generation { generation: 0x0123456789abcdef, page_size: 4096 },
        Frame::Snapshot { txid: 1, db_pages: 0, timestamp_ms: ts },
        Frame::Commit { txid: 1, db_pages: 0, timestamp_ms: ts, checksum_after: 0 },
        Frame::End { records: 3 },
    ];
    assert_eq!(frames, expected);
    let mut w = FrameWriter::new(Vec::new()).unwrap();
    for f in &expected {
        w.write(f).unwrap();
    }
    assert_eq!(w.finish().unwrap(), bytes, "the encoder must produce the spec's bytes");
}

#[test]
fn worked_example_segment_decodes() {
    let spec = spec();
    let bytes = hex_block(&spec, "segment:");
    let seg = Segment::decode(&bytes, "spec").unwrap();
    let h = &seg.header;
    assert_eq!(h.kind, SegmentKind::Snapshot);
    assert_eq!((h.generation, h.min_txid, h.max_txid), (0x0123456789abcdef, 1, 1));
    assert_eq!((h.page_size, h.db_pages, h.page_count), (4096, 0, 0));
    assert_eq!((h.part, h.parts), (0, 1));
    assert!(spec.contains(&h.name()), "the spec names the segment {}", h.name());
    assert_eq!(bytes.len(), HEADER_LEN + 9 + TRAILER_LEN);
}

/// Rows `offset size field` of the table after `heading`, until `.fi`.
fn table(spec: &str, heading: &str) -> Vec<(usize, usize)> {
    let start = spec.find(heading).unwrap();
    let block = &spec[start..];
    let block = &block[block.find(".nf").unwrap()..block.find(".fi").unwrap()];
    block
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn layout_tables_are_contiguous_and_match_the_code() {
    let spec = spec();
    let seg = table(&spec, ".SH SEGMENT FILE");
    for w in seg.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0, "segment header fields must be contiguous: {w:?}");
    }
    assert_eq!(seg.last().unwrap(), &(96, 4), "header CRC at 96");
    assert_eq!(seg.last().unwrap().0 + 4, HEADER_LEN);
    let framing = table(&spec, ".SH STREAM FRAMING");
    assert_eq!(framing.iter().map(|r| r.1).sum::<usize>(), lsw::stream::STREAM_HEADER_LEN);
}

/// The FRAME STREAM kind table: `0xNN  NAME ...` lines, in order.
fn frame_kinds(spec: &str) -> Vec<(u8, String)> {
    let start = spec.find("\n.SH FRAME STREAM\n").expect("FRAME STREAM section");
    let end = start + spec[start..].find("\n.SH SEGMENT STREAM\n").expect("next section");
    spec[start..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (hex, rest) = l.strip_prefix("0x")?.split_once(' ')?;
            Some((u8::from_str_radix(hex, 16).ok()?, rest.split_whitespace().next()?.to_string()))
        })
        .collect()
}

#[test]
fn frame_record_kinds_match_the_spec() {
    use lsw::frames::*;
    let code = [
        (KIND_GENERATION, "GENERATION"),
        (KIND_SNAPSHOT, "SNAPSHOT"),
        (KIND_TXN, "TXN"),
        (KIND_PAGE, "PAGE"),
        (KIND_COMMIT, "COMMIT"),
        (KIND_HEARTBEAT, "HEARTBEAT"),
        (KIND_WAL_POSITION, "WAL_POSITION"),
        (KIND_MARKS, "MARKS"),
        (KIND_END, "END"),
    ];
    let spec: Vec<(u8, String)> = frame_kinds(&spec());
    let code: Vec<(u8, String)> = code.iter().map(|(k, n)| (*k, n.to_string())).collect();
    assert_eq!(spec, code);
}

/// MARKS holds "db checksum u64, repeated 1 to MAX_MARKS times", and a
/// record of that many fits the frame stream's record limit.
#[test]
fn marks_limit_matches_the_spec() {
    let max = lsw::frames::MAX_MARKS;
    assert!(spec().contains(&format!("repeated 1 to {max} times")));
    assert!(max * 8 <= lsw::stream::StreamKind::Frames.max_payload() as usize);
}

#[test]
fn marks_record_is_kind_0x09_of_checksums_and_stays_in_the_shadow_log() {
    use lsw::stream::{StreamKind, StreamReader};
    let mut w = FrameWriter::new(Vec::new()).unwrap();
    w.write(&Frame::Generation { generation: 1, page_size: 512 }).unwrap();
    w.write(&Frame::Marks(vec![0x0102030405060708, 9])).unwrap();
    let bytes = w.finish().unwrap();
    let mut raw = StreamReader::open(&bytes[..], "test", &[StreamKind::Frames]).unwrap();
    raw.next_raw().unwrap().unwrap();
    let marks = raw.next_raw().unwrap().unwrap();
    assert_eq!(marks.kind, 0x09);
    assert_eq!(marks.payload, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9]);
    // A tool reading a frame stream refuses it.
    let mut r = FrameReader::open(&bytes[..], "test").unwrap();
    r.next().unwrap();
    let err = r.next().unwrap_err().to_string();
    assert!(err.contains("shadow-log record"), "{err}");
}
