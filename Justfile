# litestream-rs tasks. `just --list` shows them.

# Build the release binaries into target/release.
build:
    cargo build --release --bins

# Run every test (unit, integration, spec). Installs what the tests need.
test:
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
    cargo test --workspace --all-targets

# Replicate a sample database to a directory and restore it (in ./demo).
demo: build
    #!/usr/bin/env bash
    set -euo pipefail
    bin=target/release
    rm -rf demo && mkdir demo
    echo "demo: creating demo/app.db (a sample database in WAL mode)"
    python3 - demo/app.db <<'PY'
    import sqlite3, sys, random
    db = sqlite3.connect(sys.argv[1])
    db.execute("PRAGMA journal_mode=wal")
    db.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total REAL, note TEXT)")
    words = "backup replica sqlite page commit frame snapshot restore".split()
    rows = [(f"customer-{i % 500}", random.random() * 100, " ".join(random.choices(words, k=12))) for i in range(50_000)]
    db.executemany("INSERT INTO orders(customer, total, note) VALUES (?, ?, ?)", rows)
    db.commit()
    PY
    echo "demo: lsw-shadow --once demo/app.db | lsw-segment | lsw-push demo/replica"
    $bin/lsw-shadow --once -v demo/app.db | $bin/lsw-segment -v | $bin/lsw-push -v demo/replica
    echo "demo: litestream restore -o demo/restored.db demo/replica"
    $bin/litestream restore -v -o demo/restored.db demo/replica
    echo "demo: lsw-pull demo/replica | lsw-apply demo/piped.db"
    $bin/lsw-pull -v demo/replica | $bin/lsw-apply -v demo/piped.db
    cmp demo/restored.db demo/piped.db
    python3 -c 'import sqlite3,sys; [print("demo:", p, sqlite3.connect(p).execute("SELECT count(*) FROM orders").fetchone()[0], "orders,", sqlite3.connect(p).execute("PRAGMA integrity_check").fetchone()[0]) for p in sys.argv[1:]]' demo/app.db demo/restored.db
    echo "demo: the replica:"; find demo/replica -type f | sort

# bench/bench.py installs Litestream v0.3.13 and v0.5.17 into private venvs and
# starts a moto_server; about 20 minutes. `just bench lag,big` runs only those
# sections (lag, writer, cost, segments, big, requests).
# Benchmark against Litestream v0.3.13 and v0.5.17: one table, bench/results/bench-*.md.
bench sections="": build
    ONLY="{{sections}}" python3 bench/bench.py

# Print the worked example of man/lsw-format.5 (regenerate it after a format change).
format-example:
    cargo run -q -p lsw --example worked_example

# Regenerate the man pages of the binaries (man/*.1) from their clap definitions;
# tests/man_pages.rs fails until this is run after a flag or help text changes.
man:
    cargo run -q --example man

# Formatting and lints.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets
