mod common;

// Bad input to the real binaries: truncated and bit-flipped streams, the
// wrong kind of stream, newer formats, unusable databases, damaged
// replicas, an existing output, a terminal, a closed pipe and bad flags.
// Every failure must be a non-zero exit with one line on stderr that
// starts with the tool's name (maybe followed by a `hint:` line), and
// lsw-apply / `litestream restore` must leave nothing behind.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use common::{bin, create_db, files_containing, fill, replicate_once, script_available, sh_ok, Rng};

// ---------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------

/// How one process ended.
#[derive(Debug)]
struct Run {
    /// Exit code; `None` if killed by a signal.
    code: Option<i32>,
    stderr: String,
}

impl Run {
    fn first_line(&self) -> &str {
        self.stderr.lines().next().unwrap_or("")
    }
}

fn run_output(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run one tool in `dir` with stdin from `stdin` (or /dev/null) and stdout
/// discarded.
fn run_tool(dir: &Path, tool: &str, args: &[&str], stdin: Option<&Path>) -> Run {
    let stdin = match stdin {
        Some(p) => Stdio::from(File::open(dir.join(p)).unwrap()),
        None => Stdio::null(),
    };
    let out = Command::new(bin(tool))
        .args(args)
        .current_dir(dir)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    run_output(out)
}

/// Run tools connected by pipes (the first reads /dev/null, the last
/// writes to /dev/null); each stage's stderr goes to a file of its own so
/// messages never interleave. One `Run` per stage.
fn pipeline(dir: &Path, stages: &[(&str, &[&str])]) -> Vec<Run> {
    let logs = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut prev: Option<std::process::ChildStdout> = None;
    for (i, (tool, args)) in stages.iter().enumerate() {
        let last = i + 1 == stages.len();
        let err = File::create(logs.path().join(format!("{i}.err"))).unwrap();
        let mut child = Command::new(bin(tool))
            .args(*args)
            .current_dir(dir)
            .stdin(match prev.take() {
                Some(out) => Stdio::from(out),
                None => Stdio::null(),
            })
            .stdout(if last { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        prev = child.stdout.take();
        children.push(child);
    }
    children
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let status = c.wait().unwrap();
            Run {
                code: status.code(),
                stderr: fs::read_to_string(logs.path().join(format!("{i}.err"))).unwrap(),
            }
        })
        .collect()
}

/// Run `bash -c script` in `dir` with the binaries first on PATH.
fn bash(dir: &Path, script: &str) -> Output {
    let bindir = bin("lsw-shadow").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

// ---------------------------------------------------------------------------
// Checking failures
// ---------------------------------------------------------------------------

/// The exit status a failure must have.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Code(i32),
    /// Any non-zero exit code (but not death by a signal).
    NonZero,
}

/// A failed run: the expected exit status, stderr one line starting with
/// `TOOL: ` (plus at most a `hint:` line), every needle in that line, and
/// no panic.
fn check_error(r: &Run, tool: &str, exit: Exit, needles: &[&str]) -> Result<(), String> {
    let mut problems = Vec::new();
    match (exit, r.code) {
        (Exit::Code(c), Some(got)) if got == c => {}
        (Exit::NonZero, Some(got)) if got != 0 => {}
        (want, got) => problems.push(format!("exit status {got:?}, expected {want:?}")),
    }
    let first = r.first_line();
    if !first.starts_with(&format!("{tool}: ")) {
        problems.push(format!("first line does not start with {tool:?}"));
    }
    for n in needles {
        if !first.contains(n) {
            problems.push(format!("first line lacks {n:?}"));
        }
    }
    if r.stderr.contains("panicked") {
        problems.push("a panic".into());
    }
    let rest: Vec<&str> = r.stderr.lines().skip(1).collect();
    if rest.len() > 1 || rest.iter().any(|l| !l.starts_with("hint: ")) {
        problems.push("more than one message line and a hint".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}; stderr: {:?}", problems.join("; "), r.stderr))
    }
}

#[track_caller]
fn expect_error(r: &Run, tool: &str, exit: Exit, needles: &[&str]) {
    if let Err(e) = check_error(r, tool, exit, needles) {
        panic!("{tool}: {e}");
    }
}

/// Neither OUT nor its temporary file `.OUT.lsw-restore-*` is in `dir`.
fn nothing_left(dir: &Path, out: &str) -> Result<(), String> {
    let mut left = files_containing(dir, &format!(".{out}.lsw-restore-"));
    if dir.join(out).exists() {
        left.push(out.to_string());
    }
    if left.is_empty() {
        return Ok(());
    }
    for f in &left {
        let _ = fs::remove_file(dir.join(f));
    }
    Err(format!("left behind: {left:?}"))
}

#[track_caller]
fn expect_nothing_left(dir: &Path, out: &str) {
    if let Err(e) = nothing_left(dir, out) {
        panic!("{e}");
    }
}

/// Run `check` on every item on two threads; the failures, in item order.
fn par_check<T: Sync>(items: &[T], check: impl Fn(usize, &T) -> Result<(), String> + Sync) -> Vec<String> {
    const WORKERS: usize = 2;
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let (check, failures) = (&check, &failures);
            s.spawn(move || {
                for (i, item) in items.iter().enumerate().skip(w).step_by(WORKERS) {
                    if let Err(e) = check(w, item) {
                        failures.lock().unwrap().push((i, e));
                    }
                }
            });
        }
    });
    let mut f = failures.into_inner().unwrap();
    f.sort_by_key(|(i, _)| *i);
    f.into_iter().map(|(_, e)| e).collect()
}

#[track_caller]
fn assert_all_passed(what: &str, total: usize, failures: &[String]) {
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(15).map(|s| s.as_str()).collect();
        panic!("{what}: {} of {total} cases failed, first ones:\n{}", failures.len(), shown.join("\n"));
    }
}

// ---------------------------------------------------------------------------
// Streams and their structure
// ---------------------------------------------------------------------------

/// A tiny database (page size 512, three pages) as a frame stream and as
/// a segment stream of one snapshot part per page, both known to restore.
struct Streams {
    frames: Vec<u8>,
    segments: Vec<u8>,
}

fn tiny_db(dir: &Path, name: &str) {
    let conn = create_db(&dir.join(name), 512);
    fill(&conn, 4, 60, 4, 7);
}

fn tiny_streams(dir: &Path) -> Streams {
    tiny_db(dir, "tiny.db");
    sh_ok(
        dir,
        "lsw-shadow --once tiny.db > frames.bin\n\
         lsw-segment --part-size 512 < frames.bin > segments.bin\n\
         lsw-apply check-frames.db < frames.bin\n\
         lsw-apply check-segments.db < segments.bin\n\
         rm check-frames.db check-segments.db",
    );
    let s = Streams {
        frames: fs::read(dir.join("frames.bin")).unwrap(),
        segments: fs::read(dir.join("segments.bin")).unwrap(),
    };
    assert_eq!(&s.frames[..4], b"LSWF");
    assert_eq!(&s.segments[..4], b"LSWS");
    assert!(records(&s.segments).len() >= 3, "want several SEGMENT records");
    s
}

/// One record of a stream: where it starts, its kind and payload length.
#[derive(Debug, Clone, Copy)]
struct Rec {
    start: usize,
    kind: u8,
    len: usize,
}

impl Rec {
    fn end(&self) -> usize {
        self.start + 5 + self.len + 4
    }
}

fn records(s: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = 8;
    while at < s.len() {
        let len = u32::from_be_bytes(s[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push(Rec { start: at, kind: s[at], len });
        at += 9 + len;
    }
    assert_eq!(at, s.len(), "stream does not end at a record boundary");
    out
}

/// Which part of the stream byte `pos` is in, for messages and coverage.
fn region(recs: &[Rec], pos: usize) -> String {
    match pos {
        0..=3 => return "header magic".into(),
        4 | 5 => return "header version".into(),
        6 | 7 => return "header flags".into(),
        _ => {}
    }
    let (i, r) = recs.iter().enumerate().find(|(_, r)| pos < r.end()).expect("inside the stream");
    let part = match pos - r.start {
        0 => "kind",
        1..=4 => "length",
        rel if rel < 5 + r.len => "payload",
        _ => "crc",
    };
    let end = if i + 1 == recs.len() { "END " } else { "" };
    format!("{end}record {i} (kind {:#04x}) {part}", r.kind)
}

/// The prefix lengths to try: all of them for a small stream, else ~200
/// spread out plus every record boundary and its neighbours.
fn prefix_lengths(s: &[u8]) -> Vec<usize> {
    if s.len() <= 3000 {
        return (0..s.len()).collect();
    }
    let mut v: Vec<usize> = (0..200).map(|i| i * s.len() / 200).collect();
    v.extend(0..=9);
    for r in records(s) {
        for d in [0usize, 1, 5, 6] {
            v.push(r.start + d);
        }
        v.push(r.end() - 1);
    }
    v.retain(|&n| n < s.len());
    v.sort_unstable();
    v.dedup();
    v
}

/// The byte positions to flip: all of them for a small stream, else at
/// least 300 spread over every region.
fn flip_positions(s: &[u8]) -> Vec<usize> {
    if s.len() <= 3000 {
        return (0..s.len()).collect();
    }
    let mut v: Vec<usize> = (0..8).chain((0..300).map(|i| 8 + i * (s.len() - 8) / 300)).collect();
    for r in records(s) {
        v.extend([r.start, r.start + 1, r.start + 4, r.start + 5, r.end() - 4, r.end() - 1]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Hand-written CRC-32 (IEEE, reflected 0xEDB88320), as in man/lsw-format.5.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------
// The stages that read a stream
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// lsw-segment (reads a frame stream).
    Segment,
    /// lsw-push into `replica/` (reads a segment stream).
    Push,
    /// lsw-apply into a new OUT (reads either stream).
    Apply,
}

impl Stage {
    fn tool(self) -> &'static str {
        match self {
            Stage::Segment => "lsw-segment",
            Stage::Push => "lsw-push",
            Stage::Apply => "lsw-apply",
        }
    }
}

/// Feed `input` to `stage` (worker `w` has its own scratch names); for
/// lsw-apply also check that nothing is left behind.
fn feed(dir: &Path, stage: Stage, w: usize, input: &[u8]) -> Result<Run, String> {
    let inp = format!("input-{w}.bin");
    fs::write(dir.join(&inp), input).unwrap();
    let out = format!("out-{w}.db");
    let args: Vec<&str> = match stage {
        Stage::Segment => vec![],
        Stage::Push => vec!["replica"],
        Stage::Apply => vec![&out],
    };
    let r = run_tool(dir, stage.tool(), &args, Some(Path::new(&inp)));
    if stage == Stage::Apply {
        nothing_left(dir, &out).map_err(|e| format!("{e}; stderr: {:?}", r.stderr))?;
    }
    Ok(r)
}

// ---------------------------------------------------------------------------
// 1. Every truncated prefix
// ---------------------------------------------------------------------------

fn truncations(stage: Stage, use_frames: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let stream = if use_frames { &s.frames } else { &s.segments };
    let recs = records(stream);
    let lens = prefix_lengths(stream);
    for r in &recs {
        assert!(lens.contains(&r.start), "record boundaries are sampled");
    }
    let failures = par_check(&lens, |w, &n| {
        let r = feed(d, stage, w, &stream[..n]).map_err(|e| format!("prefix {n}: {e}"))?;
        check_error(&r, stage.tool(), Exit::Code(3), &["byte"]).map_err(|e| format!("prefix {n}: {e}"))?;
        // From the header's version on, the offset named is where the
        // input ends (before that, a cut magic is reported at byte 0).
        if (n == 0 || n >= 4) && !r.first_line().ends_with(&format!(" at byte {n}")) {
            return Err(format!("prefix {n} ({}): message does not end with \"at byte {n}\": {:?}", region(&recs, n.max(1) - 1), r.first_line()));
        }
        Ok(())
    });
    println!("{}: {} prefixes of a {}-byte stream", stage.tool(), lens.len(), stream.len());
    assert_all_passed(&format!("{} on truncated prefixes", stage.tool()), lens.len(), &failures);
}

#[test]
fn truncated_frame_stream_into_lsw_segment() {
    truncations(Stage::Segment, true);
}

#[test]
fn truncated_segment_stream_into_lsw_push() {
    truncations(Stage::Push, false);
}

#[test]
fn truncated_segment_stream_into_lsw_apply() {
    truncations(Stage::Apply, false);
}

#[test]
fn truncated_frame_stream_into_lsw_apply() {
    truncations(Stage::Apply, true);
}

// ---------------------------------------------------------------------------
// 2. A flipped bit in every region
// ---------------------------------------------------------------------------

fn flips(stage: Stage, use_frames: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let stream = if use_frames { &s.frames } else { &s.segments };
    let recs = records(stream);
    let positions = flip_positions(stream);
    // Every region is hit.
    let covered: std::collections::BTreeSet<String> = positions
        .iter()
        .map(|&p| {
            let r = region(&recs, p);
            let r = r.strip_prefix("END ").map(|_| "END".to_string()).unwrap_or(r);
            r.rsplit(' ').next().unwrap().to_string()
        })
        .collect();
    for want in ["magic", "version", "flags", "kind", "length", "payload", "crc", "END"] {
        assert!(covered.contains(want), "no flip in the {want} region: {covered:?}");
    }
    let failures = par_check(&positions, |w, &pos| {
        let bit = pos % 8;
        let mut t = stream.clone();
        t[pos] ^= 1 << bit;
        let at = format!("bit {bit} of byte {pos} ({})", region(&recs, pos));
        let r = feed(d, stage, w, &t).map_err(|e| format!("{at}: {e}"))?;
        check_error(&r, stage.tool(), Exit::Code(3), &[]).map_err(|e| format!("{at}: {e}"))?;
        let first = r.first_line();
        if !(first.contains("byte") || (first.contains("newer") && first.contains("upgrade"))) {
            return Err(format!("{at}: message names no byte: {first:?}"));
        }
        Ok(())
    });
    println!("{}: {} flipped bits in a {}-byte stream", stage.tool(), positions.len(), stream.len());
    assert_all_passed(&format!("{} on flipped bits", stage.tool()), positions.len(), &failures);
}

#[test]
fn flipped_bits_in_frame_stream_into_lsw_segment() {
    flips(Stage::Segment, true);
}

#[test]
fn flipped_bits_in_segment_stream_into_lsw_push() {
    flips(Stage::Push, false);
}

#[test]
fn flipped_bits_in_segment_stream_into_lsw_apply() {
    flips(Stage::Apply, false);
}

#[test]
fn flipped_bits_in_frame_stream_into_lsw_apply() {
    flips(Stage::Apply, true);
}

// ---------------------------------------------------------------------------
// 3. The wrong kind of stream
// ---------------------------------------------------------------------------

#[test]
fn frame_stream_into_lsw_push_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_streams(d);
    let r = run_tool(d, "lsw-push", &["replica"], Some(Path::new("frames.bin")));
    expect_error(&r, "lsw-push", Exit::Code(2), &["frame stream", "lsw-segment"]);
    assert!(!d.join("replica").exists(), "lsw-push created the replica");
}

#[test]
fn segment_stream_into_lsw_segment_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_streams(d);
    let r = run_tool(d, "lsw-segment", &[], Some(Path::new("segments.bin")));
    expect_error(&r, "lsw-segment", Exit::Code(2), &["segment stream", "frame stream"]);
}

#[test]
fn sqlite_database_into_stream_readers_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_db(d, "tiny.db");
    common::checkpoint(&d.join("tiny.db"));
    for (tool, args) in [("lsw-segment", &[][..]), ("lsw-push", &["replica"][..]), ("lsw-apply", &["out.db"][..])] {
        let r = run_tool(d, tool, args, Some(Path::new("tiny.db")));
        expect_error(&r, tool, Exit::NonZero, &["at byte 0"]);
        expect_nothing_left(d, "out.db");
    }
    assert!(!d.join("replica").exists());
}

#[test]
fn sqlite_database_into_stream_readers_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_db(d, "tiny.db");
    common::checkpoint(&d.join("tiny.db"));
    let r = run_tool(d, "lsw-apply", &["out.db"], Some(Path::new("tiny.db")));
    expect_error(&r, "lsw-apply", Exit::NonZero, &["SQLite database"]);
    expect_nothing_left(d, "out.db");
    let r = run_tool(d, "lsw-segment", &[], Some(Path::new("tiny.db")));
    expect_error(&r, "lsw-segment", Exit::NonZero, &["SQLite database"]);
    let r = run_tool(d, "lsw-push", &["replica"], Some(Path::new("tiny.db")));
    expect_error(&r, "lsw-push", Exit::NonZero, &["SQLite database"]);
}

#[test]
fn random_bytes_have_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng::new(0x5eed);
    let bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    assert!(!bytes.starts_with(b"LSW"));
    fs::write(d.join("random.bin"), &bytes).unwrap();
    let inp = Some(Path::new("random.bin"));
    let r = run_tool(d, "lsw-segment", &[], inp);
    expect_error(&r, "lsw-segment", Exit::Code(3), &["bad magic", "frame stream", "at byte 0"]);
    let r = run_tool(d, "lsw-push", &["replica"], inp);
    expect_error(&r, "lsw-push", Exit::Code(3), &["bad magic", "segment stream", "at byte 0"]);
    let r = run_tool(d, "lsw-apply", &["out.db"], inp);
    expect_error(&r, "lsw-apply", Exit::Code(3), &["bad magic", "at byte 0"]);
    expect_nothing_left(d, "out.db");
    assert!(!d.join("replica").exists());
}

#[test]
fn empty_input_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("empty.bin"), b"").unwrap();
    let inp = Some(Path::new("empty.bin"));
    let r = run_tool(d, "lsw-segment", &[], inp);
    expect_error(&r, "lsw-segment", Exit::Code(3), &["empty input", "frame stream", "at byte 0"]);
    let r = run_tool(d, "lsw-push", &["replica"], inp);
    expect_error(&r, "lsw-push", Exit::Code(3), &["empty input", "segment stream", "at byte 0"]);
    let r = run_tool(d, "lsw-apply", &["out.db"], inp);
    expect_error(&r, "lsw-apply", Exit::Code(3), &["empty input", "at byte 0"]);
    expect_nothing_left(d, "out.db");
    // The same through /dev/null as stdin.
    let r = run_tool(d, "lsw-apply", &["out.db"], None);
    expect_error(&r, "lsw-apply", Exit::Code(3), &["empty input"]);
    expect_nothing_left(d, "out.db");
}

/// The segment stream with the body of SEGMENT record `i` damaged and the
/// record's CRC recomputed, so only the segment's own checksums can tell;
/// also returns the segment's file name.
fn damaged_inside_valid_record(segments: &[u8], i: usize) -> (Vec<u8>, String) {
    let r = records(segments)[i];
    assert_eq!(r.kind, 0x11);
    let mut t = segments.to_vec();
    let p = r.start + 5;
    let klen = usize::from(u16::from_be_bytes([t[p], t[p + 1]]));
    let key = String::from_utf8(t[p + 2..p + 2 + klen].to_vec()).unwrap();
    let seg = p + 2 + klen;
    let seg_len = r.len - 2 - klen;
    t[seg + 100 + (seg_len - 108) / 2] ^= 0x04;
    let crc = crc32(&t[r.start..r.start + 5 + r.len]);
    t[r.start + 5 + r.len..r.end()].copy_from_slice(&crc.to_be_bytes());
    (t, key.rsplit('/').next().unwrap().to_string())
}

#[test]
fn damaged_segment_inside_a_valid_record_is_caught_by_lsw_apply() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let (t, name) = damaged_inside_valid_record(&s.segments, 1);
    fs::write(d.join("damaged.bin"), t).unwrap();
    let r = run_tool(d, "lsw-apply", &["out.db"], Some(Path::new("damaged.bin")));
    expect_error(&r, "lsw-apply", Exit::Code(3), &[&name, "byte"]);
    expect_nothing_left(d, "out.db");
}

#[test]
fn damaged_segment_inside_a_valid_record_is_not_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let (t, name) = damaged_inside_valid_record(&s.segments, 1);
    fs::write(d.join("damaged.bin"), t).unwrap();
    let r = run_tool(d, "lsw-push", &["replica"], Some(Path::new("damaged.bin")));
    let stored: Vec<String> = if d.join("replica/lsw1").exists() {
        segment_files(&d.join("replica")).iter().map(|p| file_name(p)).collect()
    } else {
        Vec::new()
    };
    assert!(!stored.contains(&name), "lsw-push stored the damaged {name} (exit {:?}, stderr {:?})", r.code, r.stderr);
    expect_error(&r, "lsw-push", Exit::Code(3), &[&name, "byte"]);
}

#[test]
fn bytes_after_the_end_record_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let twice = |x: &[u8]| [x, x].concat();
    fs::write(d.join("frames2x.bin"), twice(&s.frames)).unwrap();
    fs::write(d.join("segments2x.bin"), twice(&s.segments)).unwrap();
    let r = run_tool(d, "lsw-segment", &[], Some(Path::new("frames2x.bin")));
    expect_error(&r, "lsw-segment", Exit::Code(3), &[&format!("byte {}", s.frames.len())]);
    let r = run_tool(d, "lsw-push", &["replica"], Some(Path::new("segments2x.bin")));
    expect_error(&r, "lsw-push", Exit::Code(3), &[&format!("byte {}", s.segments.len())]);
    for inp in ["frames2x.bin", "segments2x.bin"] {
        let r = run_tool(d, "lsw-apply", &["out.db"], Some(Path::new(inp)));
        expect_error(&r, "lsw-apply", Exit::Code(3), &["byte"]);
        expect_nothing_left(d, "out.db");
    }
}

// ---------------------------------------------------------------------------
// 4. A newer format version
// ---------------------------------------------------------------------------

#[test]
fn newer_stream_version_asks_for_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let newer = |s: &[u8]| {
        let mut t = s.to_vec();
        t[4..6].copy_from_slice(&2u16.to_be_bytes());
        t
    };
    fs::write(d.join("frames2.bin"), newer(&s.frames)).unwrap();
    fs::write(d.join("segments2.bin"), newer(&s.segments)).unwrap();
    let want = ["stdin", "format version 2", "newer", "upgrade"];
    let r = run_tool(d, "lsw-segment", &[], Some(Path::new("frames2.bin")));
    expect_error(&r, "lsw-segment", Exit::Code(3), &want);
    let r = run_tool(d, "lsw-push", &["replica"], Some(Path::new("segments2.bin")));
    expect_error(&r, "lsw-push", Exit::Code(3), &want);
    for inp in ["frames2.bin", "segments2.bin"] {
        let r = run_tool(d, "lsw-apply", &["out.db"], Some(Path::new(inp)));
        expect_error(&r, "lsw-apply", Exit::Code(3), &want);
        expect_nothing_left(d, "out.db");
    }
    // Read from a file with -i: the message names the file.
    let r = run_tool(d, "lsw-apply", &["-i", "segments2.bin", "out.db"], None);
    expect_error(&r, "lsw-apply", Exit::Code(3), &["segments2.bin", "newer", "upgrade"]);
    expect_nothing_left(d, "out.db");
    assert!(!d.join("replica").exists());
}

/// Every segment file in a replica, in name order.
fn segment_files(replica: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for g in fs::read_dir(replica.join("lsw1")).unwrap() {
        for f in fs::read_dir(g.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "lsw") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A database of a few hundred KB of text, replicated to `replica`.
fn replicated_db(dir: &Path, replica: &str, segment_args: &str) {
    let conn = create_db(&dir.join("app.db"), 1024);
    fill(&conn, 300, 400, 100, 11);
    drop(conn);
    if segment_args.is_empty() {
        replicate_once(dir, "app.db", replica);
    } else {
        sh_ok(dir, &format!("lsw-shadow --once app.db | lsw-segment {segment_args} | lsw-push {replica}"));
    }
}

/// `lsw-pull REPLICA | lsw-apply out.db` and `litestream restore -o
/// out2.db REPLICA` both fail with `exit` and `needles`, leaving nothing.
#[track_caller]
fn expect_restores_fail(dir: &Path, replica: &str, exit: Exit, needles: &[&str]) {
    let runs = pipeline(dir, &[("lsw-pull", &[replica]), ("lsw-apply", &["out.db"])]);
    assert!(!runs[0].stderr.contains("panicked"), "lsw-pull: {:?}", runs[0].stderr);
    expect_error(&runs[1], "lsw-apply", exit, needles);
    expect_nothing_left(dir, "out.db");
    let r = run_tool(dir, "litestream", &["restore", "-o", "out2.db", replica], None);
    expect_error(&r, "litestream", exit, needles);
    expect_nothing_left(dir, "out2.db");
}

/// A replica that cannot be planned from: lsw-pull and `litestream
/// restore` fail with `exit` and `needles`; lsw-apply downstream of the
/// failed lsw-pull sees no stream; nothing is left behind.
#[track_caller]
fn expect_plan_fails(dir: &Path, replica: &str, exit: Exit, needles: &[&str]) {
    let r = run_tool(dir, "lsw-pull", &[replica], None);
    expect_error(&r, "lsw-pull", exit, needles);
    let r = run_tool(dir, "litestream", &["restore", "-o", "out.db", replica], None);
    expect_error(&r, "litestream", exit, needles);
    expect_nothing_left(dir, "out.db");
    let runs = pipeline(dir, &[("lsw-pull", &[replica]), ("lsw-apply", &["out.db"])]);
    expect_error(&runs[0], "lsw-pull", exit, needles);
    expect_error(&runs[1], "lsw-apply", Exit::NonZero, &["empty input"]);
    expect_nothing_left(dir, "out.db");
}

#[test]
fn newer_segment_version_in_replica_asks_for_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    replicated_db(d, "replica", "");
    let segs = segment_files(&d.join("replica"));
    assert_eq!(segs.len(), 1);
    let mut bytes = fs::read(&segs[0]).unwrap();
    let stored = u32::from_be_bytes(bytes[96..100].try_into().unwrap());
    assert_eq!(crc32(&bytes[..96]), stored, "the test's CRC-32 agrees with the header's");
    bytes[4..6].copy_from_slice(&2u16.to_be_bytes());
    let crc = crc32(&bytes[..96]);
    bytes[96..100].copy_from_slice(&crc.to_be_bytes());
    fs::write(&segs[0], &bytes).unwrap();
    let name = file_name(&segs[0]);
    expect_restores_fail(d, "replica", Exit::Code(3), &[&name, "format version 2", "newer", "upgrade"]);
    // lsw-push refuses to store it elsewhere too.
    let runs = pipeline(d, &[("lsw-pull", &["replica"]), ("lsw-push", &["replica2"])]);
    expect_error(&runs[1], "lsw-push", Exit::Code(3), &[&name, "newer", "upgrade"]);
    assert!(!d.join("replica2").join("lsw1").exists() || segment_files(&d.join("replica2")).is_empty());
}

#[test]
fn newer_replica_layout_asks_for_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    replicated_db(d, "replica", "");
    fs::rename(d.join("replica/lsw1"), d.join("replica/lsw2")).unwrap();
    expect_plan_fails(d, "replica", Exit::Code(3), &["replica", "format version 2", "newer", "upgrade"]);
}

// ---------------------------------------------------------------------------
// 5. lsw-shadow on databases it cannot capture
// ---------------------------------------------------------------------------

/// lsw-shadow --once on `db` fails with exit 1 and `needles`, writes no
/// frames (at most the 8-byte stream header) and leaves the directory as it was.
#[track_caller]
fn expect_shadow_fails(dir: &Path, db: &str, needles: &[&str]) {
    let before = listing(dir);
    let content = fs::read(dir.join(db)).ok();
    let out = Command::new(bin("lsw-shadow"))
        .args(["--once", db])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.stdout.len() <= 8, "lsw-shadow wrote {} bytes", out.stdout.len());
    expect_error(&run_output(out), "lsw-shadow", Exit::Code(1), needles);
    assert_eq!(listing(dir), before, "lsw-shadow changed the directory");
    assert_eq!(fs::read(dir.join(db)).ok(), content, "lsw-shadow changed {db}");
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn lsw_shadow_refuses_a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("notes.txt"), "these are not the pages you are looking for\n".repeat(10)).unwrap();
    expect_shadow_fails(d, "notes.txt", &["notes.txt", "not a SQLite database"]);
    // A short file too.
    fs::write(d.join("short.db"), b"SQLite").unwrap();
    expect_shadow_fails(d, "short.db", &["short.db", "not a SQLite database"]);
}

#[test]
fn lsw_shadow_refuses_a_rollback_journal_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    {
        let conn = rusqlite::Connection::open(d.join("journal.db")).unwrap();
        conn.execute_batch("PRAGMA page_size=512; PRAGMA journal_mode=delete; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
    }
    expect_shadow_fails(d, "journal.db", &["journal.db", "not in WAL mode"]);
}

#[test]
fn lsw_shadow_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    expect_shadow_fails(d, "missing.db", &["missing.db", "No such file"]);
    assert!(!d.join("missing.db").exists());
    expect_shadow_fails(d, "no/such/dir/app.db", &["no/such/dir/app.db"]);
}

#[test]
fn lsw_shadow_refuses_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("empty.db"), b"").unwrap();
    expect_shadow_fails(d, "empty.db", &["empty.db"]);
}

#[test]
fn failed_capture_puts_nothing_in_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("notes.txt"), "not a database\n".repeat(20)).unwrap();
    let runs = pipeline(d, &[("lsw-shadow", &["--once", "notes.txt"]), ("lsw-segment", &[]), ("lsw-push", &["replica"])]);
    expect_error(&runs[0], "lsw-shadow", Exit::Code(1), &["not a SQLite database"]);
    expect_error(&runs[1], "lsw-segment", Exit::Code(3), &["byte"]);
    expect_error(&runs[2], "lsw-push", Exit::Code(3), &["byte"]);
    assert!(!d.join("replica").join("lsw1").exists(), "something was pushed");
}

// ---------------------------------------------------------------------------
// 6. Damaged, truncated, missing and empty replicas
// ---------------------------------------------------------------------------

#[test]
fn damaged_segment_in_replica_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    replicated_db(d, "replica", "");
    let segs = segment_files(&d.join("replica"));
    assert_eq!(segs.len(), 1);
    let mut bytes = fs::read(&segs[0]).unwrap();
    assert!(bytes.len() > 1000, "segment of {} bytes", bytes.len());
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&segs[0], &bytes).unwrap();
    // lsw-pull only streams what is stored; lsw-apply finds the damage.
    let name = file_name(&segs[0]);
    expect_restores_fail(d, "replica", Exit::Code(3), &[&name, "byte"]);
}

#[test]
fn damaged_part_of_many_is_the_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    replicated_db(d, "replica", "--part-size 16KiB");
    let segs = segment_files(&d.join("replica"));
    assert!(segs.len() >= 4, "{} parts", segs.len());
    let victim = &segs[2];
    let mut bytes = fs::read(victim).unwrap();
    let mid = 100 + (bytes.len() - 108) / 2;
    bytes[mid] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    let name = file_name(victim);
    expect_restores_fail(d, "replica", Exit::Code(3), &[&name, "byte"]);
    for other in segs.iter().filter(|s| *s != victim) {
        let runs = pipeline(d, &[("lsw-pull", &["replica"]), ("lsw-apply", &["out.db"])]);
        assert!(!runs[1].first_line().contains(&file_name(other)), "{:?}", runs[1].stderr);
    }
}

#[test]
fn truncated_segment_in_replica_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    replicated_db(d, "replica", "");
    let segs = segment_files(&d.join("replica"));
    let whole = fs::read(&segs[0]).unwrap();
    let name = file_name(&segs[0]);
    for len in [whole.len() - 1, whole.len() / 2, 108, 107, 100, 50, 3, 0] {
        fs::write(&segs[0], &whole[..len]).unwrap();
        let runs = pipeline(d, &[("lsw-pull", &["replica"]), ("lsw-apply", &["out.db"])]);
        if let Err(e) = check_error(&runs[1], "lsw-apply", Exit::Code(3), &[&name, "byte"]) {
            panic!("segment cut to {len} bytes: {e}");
        }
        expect_nothing_left(d, "out.db");
        let r = run_tool(d, "litestream", &["restore", "-o", "out2.db", "replica"], None);
        if let Err(e) = check_error(&r, "litestream", Exit::Code(3), &[&name, "byte"]) {
            panic!("segment cut to {len} bytes: {e}");
        }
        expect_nothing_left(d, "out2.db");
    }
}

#[test]
fn missing_or_empty_replica_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("empty")).unwrap();
    for replica in ["missing", "empty"] {
        expect_plan_fails(d, replica, Exit::Code(1), &[replica, "no backups"]);
    }
    assert!(!d.join("missing").exists(), "a restore created the replica");
}

// ---------------------------------------------------------------------------
// 7. An existing OUT
// ---------------------------------------------------------------------------

#[test]
fn existing_out_is_refused_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    fs::write(d.join("replica-src.bin"), &s.segments).unwrap();
    sh_ok(d, "lsw-push replica < segments.bin");
    let precious = b"precious, not a database".to_vec();
    fs::write(d.join("out.db"), &precious).unwrap();
    for inp in ["segments.bin", "frames.bin"] {
        let r = run_tool(d, "lsw-apply", &["out.db"], Some(Path::new(inp)));
        expect_error(&r, "lsw-apply", Exit::NonZero, &["out.db", "already exists"]);
        assert_eq!(fs::read(d.join("out.db")).unwrap(), precious);
        assert!(files_containing(d, "lsw-restore").is_empty());
    }
    let r = run_tool(d, "litestream", &["restore", "-o", "out.db", "replica"], None);
    expect_error(&r, "litestream", Exit::NonZero, &["out.db", "already exists"]);
    assert_eq!(fs::read(d.join("out.db")).unwrap(), precious);
    assert!(files_containing(d, "lsw-restore").is_empty());
}

#[test]
fn out_in_a_missing_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_streams(d);
    let r = run_tool(d, "lsw-apply", &["no/such/dir/out.db"], Some(Path::new("segments.bin")));
    expect_error(&r, "lsw-apply", Exit::Code(1), &["no/such/dir"]);
    assert!(!d.join("no").exists());
}

#[test]
fn lsw_apply_killed_mid_stream_leaves_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = tiny_streams(d);
    let mut child = Command::new(bin("lsw-apply"))
        .arg("out.db")
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&s.frames[..s.frames.len() / 2]).unwrap();
    stdin.flush().unwrap();
    // Wait (without sleeping) until the restore is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while files_containing(d, ".out.db.lsw-restore-").is_empty() {
        assert!(std::time::Instant::now() < deadline, "lsw-apply never created its temporary file");
        std::thread::yield_now();
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    drop(stdin);
    assert!(!status.success());
    expect_nothing_left(d, "out.db");
}

// ---------------------------------------------------------------------------
// 8. A terminal
// ---------------------------------------------------------------------------


/// Run `cmdline` under `script`, so its stdin and stdout are a terminal.
/// Returns its exit code and everything it printed (stdout and stderr).
fn in_terminal(dir: &Path, cmdline: &str) -> (Option<i32>, String) {
    let out = Command::new("script")
        .args(["-qec", cmdline, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).replace('\r', ""))
}

#[test]
fn binary_stream_is_never_written_to_a_terminal() {
    if !script_available() {
        println!("note: skipping: `script` (util-linux) is not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_streams(d);
    sh_ok(d, "lsw-push replica < segments.bin");
    let shadow = bin("lsw-shadow");
    let segment = bin("lsw-segment");
    let pull = bin("lsw-pull");
    let cases = [
        ("lsw-shadow", format!("{} --once tiny.db", shadow.display())),
        ("lsw-segment", format!("{} -i frames.bin", segment.display())),
        ("lsw-pull", format!("{} replica", pull.display())),
    ];
    for (tool, cmdline) in &cases {
        let (code, printed) = in_terminal(d, cmdline);
        let r = Run { code, stderr: printed.clone() };
        expect_error(&r, tool, Exit::Code(2), &["refusing to write a binary stream to a terminal"]);
        assert!(!printed.contains("LSW"), "{tool} wrote a stream to the terminal: {printed:?}");
    }
    // lsw-apply will not wait for a stream typed on a terminal.
    let (code, printed) = in_terminal(d, &format!("{} out.db", bin("lsw-apply").display()));
    let r = Run { code, stderr: printed };
    expect_error(&r, "lsw-apply", Exit::Code(2), &["stdin is a terminal"]);
    expect_nothing_left(d, "out.db");
}

// ---------------------------------------------------------------------------
// 9. A closed downstream pipe
// ---------------------------------------------------------------------------

fn big_db(dir: &Path) {
    let conn = create_db(&dir.join("big.db"), 4096);
    fill(&conn, 4000, 1000, 1000, 3);
    drop(conn);
    assert!(fs::metadata(dir.join("big.db")).unwrap().len() > 3 << 20);
}

/// Run a bash pipeline whose last command prints "${PIPESTATUS[*]}".
fn pipe_statuses(dir: &Path, script: &str) -> Vec<i32> {
    let out = bash(dir, &format!("{script}; echo \"${{PIPESTATUS[*]}}\""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("bad PIPESTATUS {stdout:?}")))
        .collect()
}

fn stderr_file(dir: &Path, name: &str) -> Run {
    Run { code: None, stderr: fs::read_to_string(dir.join(name)).unwrap() }
}

#[test]
fn closed_pipe_after_lsw_shadow_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    big_db(d);
    let st = pipe_statuses(d, "lsw-shadow --once big.db 2>shadow.err | head -c 100 >/dev/null");
    assert_eq!(st.len(), 2);
    let r = Run { code: Some(st[0]), ..stderr_file(d, "shadow.err") };
    expect_error(&r, "lsw-shadow", Exit::Code(1), &["Broken pipe"]);
    assert!(r.stderr.contains("hint: "), "no hint: {:?}", r.stderr);
    // The database and its WAL are as they were: no checkpoint, no write.
    common::integrity_ok(&d.join("big.db"));
}

#[test]
fn closed_pipe_after_lsw_segment_and_lsw_pull_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    big_db(d);
    let st = pipe_statuses(d, "lsw-shadow --once big.db 2>shadow.err | lsw-segment 2>segment.err | head -c 100 >/dev/null");
    assert_eq!(st.len(), 3);
    let seg = Run { code: Some(st[1]), ..stderr_file(d, "segment.err") };
    expect_error(&seg, "lsw-segment", Exit::Code(1), &["Broken pipe"]);
    // lsw-shadow may or may not have finished before lsw-segment left.
    let shadow = stderr_file(d, "shadow.err");
    assert!(!shadow.stderr.contains("panicked"), "{:?}", shadow.stderr);
    assert!(st[0] == 0 || st[0] == 1, "lsw-shadow exit {}: {:?}", st[0], shadow.stderr);

    replicate_once(d, "big.db", "replica");
    let st = pipe_statuses(d, "lsw-pull replica 2>pull.err | head -c 100 >/dev/null");
    let pull = Run { code: Some(st[0]), ..stderr_file(d, "pull.err") };
    expect_error(&pull, "lsw-pull", Exit::Code(1), &["Broken pipe"]);
}

// ---------------------------------------------------------------------------
// 10. Bad flags
// ---------------------------------------------------------------------------

/// clap's own messages: exit 2 and the offending text somewhere in stderr.
#[track_caller]
fn expect_usage(dir: &Path, tool: &str, args: &[&str], needle: &str) {
    let r = run_tool(dir, tool, args, None);
    assert_eq!(r.code, Some(2), "{tool} {args:?}: {:?}", r.stderr);
    assert!(r.stderr.contains(needle), "{tool} {args:?}: no {needle:?} in {:?}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{tool} {args:?}: {:?}", r.stderr);
}

#[test]
fn bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (tool, args) in [
        ("lsw-shadow", &["--once", "--no-such-flag", "x.db"][..]),
        ("lsw-segment", &["--no-such-flag"][..]),
        ("lsw-push", &["--no-such-flag", "replica"][..]),
        ("lsw-pull", &["--no-such-flag", "replica"][..]),
        ("lsw-apply", &["--no-such-flag", "out.db"][..]),
        ("litestream", &["restore", "--no-such-flag", "-o", "out.db", "replica"][..]),
    ] {
        expect_usage(d, tool, args, "--no-such-flag");
    }
    expect_usage(d, "lsw-pull", &["--txid", "abc", "replica"], "abc");
    expect_usage(d, "lsw-pull", &["--txid", "3", "--timestamp", "2026-01-01T00:00:00Z", "replica"], "--timestamp");
    expect_usage(d, "lsw-pull", &["--generation", "xyz", "replica"], "xyz");
    expect_usage(d, "litestream", &["restore", "-o", "out.db", "--txid", "abc", "replica"], "abc");
    expect_usage(d, "lsw-segment", &["--level", "99"], "99");
    expect_usage(d, "lsw-segment", &["--part-size", "1PB"], "1PB");
    expect_usage(d, "lsw-segment", &["--sync-interval", "soon"], "soon");
    expect_usage(d, "lsw-apply", &[], "OUT");
    // Usage problems found after parsing come in the tools' own format.
    let r = run_tool(d, "lsw-shadow", &["x.db"], None);
    expect_error(&r, "lsw-shadow", Exit::Code(1), &["x.db"]);
    assert!(!d.join(".x.db-lsw").exists(), "no state directory for a missing database");
    let r = run_tool(d, "lsw-pull", &["nosuch://host/app"], None);
    expect_error(&r, "lsw-pull", Exit::Code(2), &["unsupported replica scheme", "nosuch"]);
    let r = run_tool(d, "litestream", &["restore", "-o", "out.db", "file://relative"], None);
    expect_error(&r, "litestream", Exit::Code(2), &["file:///path"]);
    expect_nothing_left(d, "out.db");
    assert!(!d.join("x.db").exists());
}

#[test]
fn bad_flags_are_reported_in_the_tools_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = run_tool(d, "lsw-pull", &["--txid", "abc", "replica"], None);
    expect_error(&r, "lsw-pull", Exit::Code(2), &["abc"]);
    let r = run_tool(d, "lsw-push", &["--no-such-flag", "replica"], None);
    expect_error(&r, "lsw-push", Exit::Code(2), &["--no-such-flag"]);
}
