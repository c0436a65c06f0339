"""Where runs execute: local worker processes, or a Dask cluster.

Both take the same tasks and return the same results in completion order; a run is seeded
and independent, so the executor changes only the wall time. Workers only compute: the
results come back to the client, which alone writes the store.

    LocalExecutor(workers)      a pool of spawned processes, one BLAS thread each, started
                                once and kept until close(); workers=1 runs in this process
                                (processes=True: in one worker process all the same)
    DaskExecutor(address)       dask.distributed (pip install 'tinygrad_opt[cluster]'): a
                                scheduler address such as "tcp://10.0.0.5:8786", or a Client
                                or cluster object; the workers need tinygrad_opt installed

Both are context managers (close() on exit); run_benchmark closes only the executor it made.
"""
import contextlib
import os
import time

from .._optional import MissingDependency

_BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# what a run imports on first use: a worker imports it at start-up, before its first run
_RUN_MODULES = ("tinygrad_opt.experiment", "tinygrad_opt.train", "tinygrad_opt.nn",
                "tinygrad_opt.optim.registry", "tinygrad_opt.testfunctions")
# data sets the client loads once and sends to every worker; the others (MNIST, hundreds of
# MB) each worker reads from its files itself
_SENT_DATA = ("digits", "spirals")


def execute(task):
    """Run one task in whatever process this is; the result dict adds total_seconds."""
    from .problems import get_problem
    t0 = time.perf_counter()
    result = get_problem(task.problem).run(task.optimizer, task.hparams, task.seed,
                                           epochs=task.epochs, data_dir=task.data_dir)
    result["total_seconds"] = time.perf_counter() - t0
    return result


def _start_worker(datasets, load):
    """A worker process's initializer: the imports and the data sets of every later run."""
    import importlib
    from . import problems
    for m in _RUN_MODULES:
        importlib.import_module(m)
    problems.install_data(datasets)
    problems.load_data(load)


@contextlib.contextmanager
def _one_blas_thread():
    """Processes started inside inherit one BLAS thread each (N workers on N cores)."""
    saved = {k: os.environ.get(k) for k in _BLAS_THREADS}
    for k in _BLAS_THREADS:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalExecutor:
    """Runs tasks on `workers` local processes (default: the number of cores).

    The processes start at the first map and serve every later one until close(), so a
    benchmark's tuning and seed phases share them. Each starts with one BLAS thread, the
    package and the data sets of the first map's tasks (loaded once, here, and sent), so
    a run imports and loads nothing. Tasks are handed out one at a time as workers free up,
    in the order given (run_tasks puts the longest first). workers=1 runs in this process
    unless processes=True.
    """

    def __init__(self, workers=None, *, processes=None):
        workers = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.processes = workers > 1 if processes is None else bool(processes)
        self._pool = None

    def __repr__(self):
        return f"LocalExecutor(workers={self.workers})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop the worker processes (a later map starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _start(self, tasks):
        import concurrent.futures as cf
        import multiprocessing
        from .problems import data_keys, load_data
        keys = data_keys(tasks)
        sent = load_data([k for k in keys if k[0] in _SENT_DATA])
        self._pool = cf.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),  # no forked BLAS state
            initializer=_start_worker, initargs=(sent, [k for k in keys if k not in sent]))
        return self._pool

    def map(self, fn, tasks):
        """Yield (task, fn(task)) as each finishes."""
        import concurrent.futures as cf
        tasks = list(tasks)
        if not self.processes:
            for t in tasks:
                yield t, fn(t)
            return
        if not tasks:
            return
        pool = self._pool or self._start(tasks)
        with _one_blas_thread():                        # a worker starts at a submit
            futures = {pool.submit(fn, t): t for t in tasks}
        try:
            for f in cf.as_completed(futures):
                yield futures[f], f.result()
        except cf.process.BrokenProcessPool:
            self.close()                                # a worker died: the next map starts anew
            raise
        finally:
            for f in futures:
                f.cancel()


class DaskExecutor:
    """Runs tasks on a dask.distributed cluster; `address` is a scheduler address, a Client,
    or a cluster object (e.g. LocalCluster)."""

    def __init__(self, address):
        try:
            from distributed import Client
        except ImportError:
            raise MissingDependency("running a benchmark on a Dask cluster (--scheduler) needs "
                                    "dask.distributed: pip install 'tinygrad_opt[cluster]'") from None
        self._own = not isinstance(address, Client)
        self.client = Client(address) if self._own else address

    def __repr__(self):
        return f"DaskExecutor({self.client.scheduler.address})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._own:
            self.client.close()

    def map(self, fn, tasks):
        """Yield (task, fn(task)) as each finishes on the cluster."""
        from distributed import as_completed
        tasks = list(tasks)
        if not tasks:
            return
        futures = self.client.map(fn, tasks, pure=False)
        which = {f.key: t for f, t in zip(futures, tasks)}
        try:
            for f, result in as_completed(futures, with_results=True):
                yield which[f.key], result
        finally:
            self.client.cancel(futures)
