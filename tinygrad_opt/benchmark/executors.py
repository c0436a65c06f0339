"""Where runs execute: local worker processes, or a Dask cluster.

Both take the same tasks and return the same results in completion order; a run is seeded
and independent, so the executor changes only the wall time. Workers only compute: the
results come back to the client, which alone writes the store.

    LocalExecutor(workers)      a process pool (spawned processes, one BLAS thread each);
                                workers=1 runs in this process
    DaskExecutor(address)       dask.distributed (pip install 'tinygrad_opt[cluster]'): a
                                scheduler address such as "tcp://10.0.0.5:8786", or a Client
                                or cluster object; the workers need tinygrad_opt installed
"""
import contextlib
import os
import time

from .._optional import MissingDependency

_BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def execute(task):
    """Run one task in whatever process this is; the result dict adds total_seconds."""
    from .problems import get_problem
    t0 = time.perf_counter()
    result = get_problem(task.problem).run(task.optimizer, task.hparams, task.seed,
                                           epochs=task.epochs, data_dir=task.data_dir)
    result["total_seconds"] = time.perf_counter() - t0
    return result


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
    """Runs tasks on `workers` local processes (default: the number of cores)."""

    def __init__(self, workers=None):
        workers = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def __repr__(self):
        return f"LocalExecutor(workers={self.workers})"

    def map(self, fn, tasks):
        """Yield (task, fn(task)) as each finishes."""
        tasks = list(tasks)
        if self.workers == 1 or len(tasks) <= 1:
            for t in tasks:
                yield t, fn(t)
            return
        import concurrent.futures as cf
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")      # no forked BLAS or lock state
        with cf.ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=ctx) as pool:
            with _one_blas_thread():                    # workers start as tasks are submitted
                futures = {pool.submit(fn, t): t for t in tasks}
            try:
                for f in cf.as_completed(futures):
                    yield futures[f], f.result()
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
