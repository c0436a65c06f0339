"""The result store: one SQLite row per run (the standard library's sqlite3).

A run is identified by its key, the canonical JSON of (problem, optimizer, hyperparameters,
seed, epochs); the row holds the status ("running", "ok", "diverged", "failed: ..."), the
metric, step and second counts per epoch, the total time, the package version and when it
ran. A benchmark asks `done()` which keys are finished and runs only the others, so a
killed benchmark re-run with the same command resumes: finished runs are kept, a run left
"running" by the kill is redone. The database is in WAL mode with a busy timeout, so
several processes may read and write it at once without corrupting it; a benchmark writes
from its client process only (workers return results).
"""
import json
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    hparams TEXT NOT NULL,
    seed INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    status TEXT NOT NULL,
    metric TEXT,
    steps TEXT,
    seconds TEXT,
    total_seconds REAL,
    error TEXT,
    version TEXT,
    started REAL,
    finished REAL
)"""
FINISHED = "status != 'running'"


def run_key(problem, optimizer, hparams, seed, epochs):
    """The canonical identity of a run (the same settings always give the same key)."""
    return json.dumps([problem, optimizer, hparams, int(seed), int(epochs)], sort_keys=True,
                      separators=(",", ":"))


class Store:
    """A benchmark database at `path` (created with its folder if missing)."""

    def __init__(self, path, timeout=60.0):
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":           # e.g. a network file system without shared memory
            raise RuntimeError(f"benchmark store {self.path}: SQLite refused WAL mode ({mode})")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(SCHEMA)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self, sql, args):
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue instead of
        # failing halfway through a transaction.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(sql, args)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def done(self):
        """The keys of finished runs (any status but 'running')."""
        return {k for (k,) in self.conn.execute(f"SELECT key FROM runs WHERE {FINISHED}")}

    def start(self, task):
        """Mark a task as running (replacing an interrupted attempt)."""
        from .. import __version__
        self._write("INSERT OR REPLACE INTO runs (key, problem, optimizer, hparams, seed, epochs, "
                    "status, version, started) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                    (task.key, task.problem, task.optimizer, json.dumps(task.hparams, sort_keys=True),
                     task.seed, task.epochs, __version__, time.time()))

    def finish(self, task, result):
        """Record a run's result (the dict a Problem's run returns, plus total_seconds)."""
        from .. import __version__
        self._write("INSERT OR REPLACE INTO runs (key, problem, optimizer, hparams, seed, epochs, "
                    "status, metric, steps, seconds, total_seconds, error, version, started, "
                    "finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "(SELECT started FROM runs WHERE key = ?), ?)",
                    (task.key, task.problem, task.optimizer, json.dumps(task.hparams, sort_keys=True),
                     task.seed, task.epochs, result["status"], json.dumps(result["metric"]),
                     json.dumps(result["steps"]), json.dumps(result["seconds"]),
                     result.get("total_seconds"), result.get("error"), __version__, task.key,
                     time.time()))

    def get(self, key):
        """The finished run `key` as a dict, or None."""
        cur = self.conn.execute(f"SELECT * FROM runs WHERE key = ? AND {FINISHED}", (key,))
        row = cur.fetchone()
        if row is None:
            return None
        r = dict(zip([c[0] for c in cur.description], row))
        for k in ("hparams", "metric", "steps", "seconds"):
            r[k] = json.loads(r[k]) if r[k] is not None else None
        return r

    def count(self, status=None):
        if status is None:
            return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]
