"""Run a function over chunks in parallel: threads here, or a Dask cluster.

Our kernels release the GIL, so threads in one process scale over cores
without copying images between processes. For more than one machine, the
same work goes to a Dask cluster (`dask.scheduler=tcp://host:8786`), or to a
LocalCluster of worker processes (`dask.scheduler=local`). Results come back
in the order of the inputs either way, with a bounded number of chunks in
flight so that memory does not grow with the length of the data set.

Work sent to Dask is pickled here, on the client, and unpickled by workers
that may run in another folder or on another machine. Every object that
holds an open file (image sources, masks) pickles through
`pickled_by_path`: as its absolute path (resolved against the client's
folder) and what reopens it, so that workers open the same file, at the same
path, whatever their own folder; a worker that cannot open it says so.
"""

import collections
import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from libtbx import Auto
from libtbx.phil import parse

from dials_diffuse.util.errors import DataError, UserError

phil_scope = parse(
    """
nproc = Auto
  .type = int(value_min=1)
  .help = "Number of parallel workers: threads in this process, or worker"
          "processes with dask.scheduler=local. Auto: every core."
dask {
  scheduler = None
    .type = str
    .help = "Send chunked work to Dask: the address of a running scheduler"
            "(e.g. tcp://host:8786), or 'local' for a LocalCluster of nproc"
            "worker processes on this machine. None: threads in this process."
}
"""
)


def resolve_nproc(nproc):
    """Return `nproc`, or the number of usable cores when it is None/Auto."""
    if nproc and nproc is not Auto:
        return int(nproc)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pickled_by_path(opener, path, *args):
    """What `__reduce__` returns for an object that holds an open file.

    Unpickling (in a Dask worker) calls ``opener(path, *args)``, with `path`
    made absolute now, on the client: workers need the same files at the same
    paths, not the client's working folder. Before reopening, the worker
    checks that it can open the file (`check_worker_can_open`).
    """
    return (_reopen_on_worker, (opener, os.path.abspath(os.fspath(path)), args))


def _reopen_on_worker(opener, path, args):
    check_worker_can_open(path)
    return opener(path, *args)


def check_worker_can_open(path):
    """DataError "worker on HOST cannot open PATH: reason" unless `path` opens for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise DataError(
            f"worker on {socket.gethostname()} cannot open {path}: {reason}"
        ) from None


class _ThreadBackend:
    def __init__(self, nproc):
        self.workers = nproc
        self._pool = ThreadPoolExecutor(max_workers=nproc)

    def share(self, function):
        """Threads share this process's memory: nothing to send."""
        return function

    def submit(self, function, item):
        return self._pool.submit(function, item)

    def close(self):
        self._pool.shutdown(wait=True)


def _apply(function, item):
    return function(item)


class _DaskBackend:
    def __init__(self, nproc, scheduler):
        try:
            from distributed import Client, LocalCluster
        except ImportError as error:
            raise UserError(
                "dask.scheduler needs the 'distributed' package: pip install 'dask[distributed]'"
            ) from error
        self._cluster = None
        try:
            if scheduler == "local":
                self._cluster = LocalCluster(
                    n_workers=nproc,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                self._client = Client(self._cluster)
            else:
                self._client = Client(scheduler, timeout="10s")
        except OSError as error:
            if self._cluster is not None:
                self._cluster.close()
            raise UserError(
                f"cannot reach the Dask scheduler {scheduler}: {error}"
            ) from error
        self.workers = max(1, len(self._client.scheduler_info()["workers"]))

    def share(self, function):
        """Send `function` (and what it holds: models, masks, peak tables) to
        every worker once, rather than with each item."""
        return self._client.scatter(function, broadcast=True, hash=False)

    def submit(self, function, item):
        return self._client.submit(_apply, function, item, pure=False)

    def close(self):
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class ParallelMap:
    """Map a function over items in parallel, yielding results in input order.

    Use as a context manager so that threads or the Dask client are released::

        with ParallelMap(nproc=2) as pmap:
            for result in pmap(integrate_chunk, chunks):
                ...

    Parameters
    ----------
    nproc : int or None
        Workers; None means every core.
    scheduler : str or None
        None for threads; 'local' or a scheduler address for Dask. With Dask,
        the function and items must be picklable (module-level functions).
    """

    def __init__(self, nproc=None, scheduler=None):
        nproc = resolve_nproc(nproc)
        if scheduler:
            self._backend = _DaskBackend(nproc, scheduler)
        else:
            self._backend = _ThreadBackend(nproc)

    @property
    def workers(self):
        """How many workers run at once."""
        return self._backend.workers

    def __call__(self, function, items, in_flight=None):
        """Yield `function(item)` for each item, in order.

        At most `in_flight` (default twice the workers) items are submitted
        and not yet consumed, which bounds memory by a few chunks.
        """
        limit = in_flight or 2 * self.workers
        function = self._backend.share(function)
        pending = collections.deque()
        items = iter(items)
        for item in items:
            pending.append(self._backend.submit(function, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self):
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def parallel_map_from_params(params):
    """A ParallelMap configured from a program's `nproc` and `dask.scheduler`."""
    pmap = ParallelMap(nproc=params.nproc, scheduler=params.dask.scheduler)
    try:
        yield pmap
    finally:
        pmap.close()
