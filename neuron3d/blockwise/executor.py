"""The engine that runs blockwise tasks: a dask.distributed client, or a serial executor.

(The module is ``executor``, not ``engine``: :func:`engine` is the function every script
calls, ``neuron3d.blockwise.engine``, and a submodule of that name would be hidden by it.)

``--scheduler`` picks it: ``local:N`` starts a dask ``LocalCluster`` of N worker
processes on this machine; ``tcp://HOST:PORT`` connects to a running dask scheduler
(dask-jobqueue on SLURM/PBS, dask-kubernetes, ``dask scheduler`` by hand...); no
``--scheduler`` (``engine(None)``) runs the same tasks one after the other in this process
(:class:`SerialExecutor`, the same ``map`` / :func:`gather_with_progress` interface).

A task that meets bad input (a negative label, an undecodable chunk: a ``ValueError`` or
``FileNotFoundError``) returns it as a value instead of raising, so the workers log no
"Compute Failed ... Traceback" and the client raises it as one line
(:func:`gather_with_progress`).  The memory a worker needs for one block is checked before
anything is submitted (:func:`check_block_memory`).
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from contextlib import contextmanager

from ..cli import USER_ERRORS

__all__ = ["MIN_WORKER_MEMORY", "PAUSED_SECONDS", "SerialExecutor", "WORKER_MALLOC",
           "add_arguments", "check_arguments", "check_block_memory", "check_memory_limit",
           "engine", "gather_with_progress", "parse_scheduler", "probe_scheduler", "run_tasks",
           "task"]

#: The least ``--memory_limit`` accepted: a worker process with numpy, scipy, zarr and cc3d
#: imported holds about 106 MiB (measured with psutil on a LocalCluster worker), and dask
#: pauses a worker at 80% of its limit; below this a worker is paused before its first block
#: and the run makes no progress.
MIN_WORKER_MEMORY = 256 * 2**20
#: What a worker holds before its first block (see :data:`MIN_WORKER_MEMORY`), rounded up.
WORKER_BASELINE = 128 * 2**20

# glibc's allocator in the LocalCluster's workers.  dask sets MALLOC_TRIM_THRESHOLD_=65536,
# which also turns off glibc's adaptive mmap threshold: every array above 128 KiB is then a
# fresh mmap whose pages fault in, and a block's arrays are megabytes (the 16x volume of
# benchmarks/bench_scale.py: reconstruct 8.1 s on 2 workers with dask's setting, 4.0 s with
# this one).  Arrays below 32 MiB come from the heap and are reused instead; up to 128 MiB
# of freed heap is kept before it is returned.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 128 * 2**20}


def parse_scheduler(spec, name="--scheduler"):
    """``("local", N)`` for ``local:N`` (N >= 1), ``("address", spec)`` for ``tcp://HOST:PORT``
    (or tls://, ucx://...), else ValueError naming ``name``."""
    spec = str(spec).strip()
    if spec.startswith("local:"):
        count = spec.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{name} local:N needs a number of worker processes N >= 1, "
                             f"got {spec!r}")
        return "local", int(count)
    if "://" in spec and spec.split("://", 1)[1]:
        return "address", spec
    raise ValueError(f"{name} must be local:N (a LocalCluster of N worker processes) or the "
                     f"address of a dask scheduler such as tcp://HOST:8786, got {spec!r}")


def check_memory_limit(text, name="--memory_limit"):
    """Bytes per worker from ``"2GiB"``, ``"500MB"``... (dask's notation).

    Raises
    ------
    ValueError
        Naming ``name`` and the value, if it is not a finite size, or below
        :data:`MIN_WORKER_MEMORY` (a worker paused before its first block).
    """
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(text)
    except (ValueError, TypeError, OverflowError):
        value = None
    if value is None or not math.isfinite(value) or value <= 0 or value >= 2**63:
        raise ValueError(f"{name} must be a size such as 2GiB or 500MB, got {text!r}")
    if value < MIN_WORKER_MEMORY:
        raise ValueError(f"{name} {text} is below the {MIN_WORKER_MEMORY // 2**20} MiB a dask "
                         "worker needs (about 106 MiB for the process itself; dask pauses a "
                         "worker at 80% of its limit)")
    return int(value)


async def _identity(address, timeout):
    from distributed.comm import connect
    from distributed.security import Security

    # the connection arguments a Client gets from dask's configuration (tls:// certificates)
    comm = await connect(address, timeout=timeout,
                         **Security().get_connection_args("client"))
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def probe_scheduler(address, timeout=5.0):
    """Check that a dask scheduler answers at ``address`` within ``timeout`` seconds.

    dask's own connect covers the TCP connection but not its handshake: a listener that
    accepts and never answers (or an HTTP server, which waits for a request) would hang
    the client for ever, and a service that sends bytes of its own (an SSH banner) makes it
    allocate exabytes.  This asks the address for its identity with dask's protocol, under
    one deadline for connection, handshake and answer.

    Raises
    ------
    ValueError
        Naming ``--scheduler`` and the address: nothing answered in time, or what answered
        is not a dask scheduler.
    """
    import asyncio

    try:
        info = asyncio.run(asyncio.wait_for(_identity(address, timeout), timeout))
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"--scheduler {address}: no dask scheduler answered within "
                         f"{timeout:g} s ({type(exc).__name__})") from None
    except Exception as exc:  # garbage decoded as dask frames: MemoryError, msgpack errors...
        raise ValueError(f"--scheduler {address} is not a dask scheduler (its answer is not "
                         f"dask's protocol: {type(exc).__name__})") from None
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        kind = info.get("type") if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"--scheduler {address} is not a dask scheduler (it says it is "
                         f"{kind!r})")


class _Done:
    """A future of :class:`SerialExecutor`: computed when its result is first asked for."""

    __slots__ = ("key", "_call", "_value")

    def __init__(self, key, function, args):
        self.key = key
        self._call = (function, args)
        self._value = None

    def result(self):
        if self._call is not None:
            function, args = self._call
            self._call = None  # drop the arguments: their results are freed once used
            self._value = function(*[a.result() if isinstance(a, _Done) else a
                                     for a in args])
        return self._value


class SerialExecutor:
    """The engine without ``--scheduler``: tasks run in this process, one after the other.

    ``map`` takes the arguments dask's ``Client.map`` takes (``pure`` and ``priority`` are
    accepted and ignored; futures of this executor may be arguments) and returns futures
    that compute when :func:`gather_with_progress` asks for them, in order: a task's inputs
    are computed first, and a result is freed when no future needs it any more (the
    blockwise passes hold one layer of blocks, as on a cluster).
    """

    memory_limits = ()

    def __init__(self):
        self._count = 0

    def map(self, function, *iterables, pure=False, priority=0):
        futures = []
        for args in zip(*iterables):
            self._count += 1
            futures.append(_Done(self._count, function, args))
        return futures

    def cancel(self, futures):
        _cancel(futures)

    def close(self):
        pass


class _Failed:
    """What a task returns instead of raising bad input: the exception's type and message."""

    __slots__ = ("kind", "message")

    def __init__(self, exc):
        self.kind = type(exc)
        self.message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _guarded(function, *args, **kwargs):
    for arg in args:
        if isinstance(arg, _Failed):  # an input task failed: pass its failure on
            return arg
    try:
        return function(*args, **kwargs)
    except USER_ERRORS as exc:
        return _Failed(exc)


def task(function, *args, **kwargs):
    """``functools.partial(function, *args, **kwargs)`` run as a task: bad input it meets
    (``ValueError``, ``FileNotFoundError``...) is returned, not raised, so that workers log
    nothing; :func:`gather_with_progress` raises it on the client.  A task given the
    failure of an earlier task returns that failure."""
    return functools.partial(_guarded, functools.partial(function, *args, **kwargs))


@contextmanager
def engine(spec, memory_limit=None, connect_timeout=5.0):
    """A dask.distributed ``Client`` for ``--scheduler spec`` (see :func:`parse_scheduler`),
    or a :class:`SerialExecutor` for ``spec=None``.

    A LocalCluster (one thread per worker process, dashboard on 127.0.0.1) is closed
    on exit.  While the client is in use, SIGTERM raises KeyboardInterrupt (as Ctrl-C
    does), so that what is being written is cleaned up.  The dashboard's address is
    printed on stderr.  An address where no dask scheduler answers within
    ``connect_timeout`` seconds is a ValueError (:func:`probe_scheduler`).
    """
    if spec is None:
        if memory_limit is not None:
            raise ValueError("--memory_limit applies to --scheduler local:N")
        yield SerialExecutor()
        return
    kind, value = parse_scheduler(spec)
    limit = check_memory_limit(memory_limit) if memory_limit is not None else "auto"
    import dask
    from dask.distributed import Client, LocalCluster

    cluster = None
    if kind == "local":
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v
                              for k, v in WORKER_MALLOC.items()}):
            cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                   memory_limit=limit, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0",
                                   silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        if memory_limit is not None:
            raise ValueError("--memory_limit applies to --scheduler local:N; a running "
                             "scheduler's workers have their own limits")
        probe_scheduler(value, connect_timeout)
        try:
            client = Client(value, timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"--scheduler {value}: no dask scheduler answered within "
                             f"{connect_timeout:g} s ({type(exc).__name__})") from None
    print(f"dask: {len(client.scheduler_info()['workers'])} workers, dashboard "
          f"{client.dashboard_link}", file=sys.stderr)
    try:
        with _terminate_as_interrupt():
            yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a job scheduler's or ``kill``'s stop) handled as Ctrl-C while the engine
    runs: the store being written is removed and the workers stop, instead of leaving a
    ``.part`` store.  Only in the main thread, where Python handles signals."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_block_memory(client, need, what):
    """Refuse to submit blocks that need ``need`` bytes each to workers that cannot hold one.

    A worker holding more than 80% of its memory limit is paused by dask (it then makes no
    progress, and no error is raised), so a block must fit below that, beside what the
    worker process holds itself (:data:`WORKER_BASELINE`).  Workers without a limit, and
    the serial executor, pass.

    Raises
    ------
    ValueError
        Naming ``--memory_limit`` and ``--chunks``, the limit and the block's need.
    """
    if isinstance(client, SerialExecutor):
        return
    import dask

    pause = dask.config.get("distributed.worker.memory.pause") or 1.0
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    limits = [limit for limit in limits if limit]
    if limits and min(limits) * pause < WORKER_BASELINE + need:
        raise ValueError(f"--memory_limit: a worker's limit of {min(limits) / 2**20:.0f} MiB "
                         f"is too small for one block of {what} (about {need / 2**20:.0f} MiB "
                         f"beside the worker's own {WORKER_BASELINE // 2**20} MiB, below "
                         f"{pause:.0%} of the limit, where dask pauses a worker); give the "
                         "workers more memory (--memory_limit for local:N) or smaller --chunks")


def run_tasks(client, function, items, desc):
    """``[function(item) for item in items]`` on the engine, with a progress bar on stderr."""
    return gather_with_progress(client.map(function, list(items), pure=False), desc)


#: How long every worker may stay paused for memory, with no task finishing, before a run
#: fails (dask pauses a worker above 80% of its memory limit; with nothing to spill, a
#: paused worker makes no progress and dask raises nothing).
PAUSED_SECONDS = 60.0


class _Paused(Exception):
    pass


def _completed(futures):
    """``futures`` as they complete (the serial executor's in order); :class:`_Paused` when
    every dask worker has been paused for :data:`PAUSED_SECONDS` with none completing."""
    if futures and isinstance(futures[0], _Done):
        yield from list(futures)
        return
    from dask.distributed import wait

    pending = set(futures)
    client = futures[0].client if futures else None
    paused_since = None
    while pending:
        try:
            done, pending = wait(pending, timeout=min(5.0, PAUSED_SECONDS),
                                 return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = ()
        if done:
            paused_since = None
            yield from done
            continue
        workers = client.scheduler_info()["workers"].values()
        if workers and all(w.get("status") == "paused" for w in workers):
            paused_since = paused_since or time.monotonic()
            if time.monotonic() - paused_since >= PAUSED_SECONDS:
                raise _Paused
        else:
            paused_since = None


def gather_with_progress(futures, desc):
    """The results of ``futures`` in their order, with a progress bar on stderr as they
    complete.

    Each future is dropped from the list ``futures`` (set to None) as soon as its result is
    here, so that dask frees the result on its worker then, not at the end of the pass:
    the workers hold the results not yet fetched, not all of them (the results of a pass,
    such as the blocks' region graphs, grow with the volume; the workers' memory must not).

    Raises
    ------
    ValueError, FileNotFoundError...
        The bad input a task (:func:`task`) met, with its message; the other tasks are
        cancelled.  Workers killed for memory, or all paused for memory for
        :data:`PAUSED_SECONDS`, are a ValueError naming ``--memory_limit``.
    """
    from ..progress import StepProgress

    index = {f.key: i for i, f in enumerate(futures)}
    results = [None] * len(futures)
    bar = StepProgress(len(futures), desc=desc, every_seconds=10, final_line=True,
                       unit="block")
    try:
        for done, future in enumerate(_completed(futures), 1):
            try:
                result = future.result()
            except Exception as exc:
                if type(exc).__name__ != "KilledWorker":
                    raise
                _cancel(futures)
                raise ValueError(f"{desc}: dask workers died running a block (out of "
                                 "memory? see --memory_limit and --chunks)") from None
            if isinstance(result, _Failed):
                _cancel(futures)
                raise result.kind(result.message)
            position = index[future.key]
            results[position] = result
            futures[position] = future = None  # the worker may free it now
            bar.update(done)
    except _Paused:
        _cancel(futures)
        raise ValueError(f"{desc}: every dask worker has been paused for memory for "
                         f"{PAUSED_SECONDS:g} s, nothing runs (see --memory_limit and "
                         "--chunks)") from None
    finally:
        bar.close()
    return results


def _cancel(futures):
    for future in futures:
        if future is None:
            continue
        if isinstance(future, _Done):
            future._call = None
        else:
            future.cancel()


# ---------------------------------------------------------------------------------------------
# the command lines' options


def add_arguments(parser, chunks=True):
    """--scheduler, --memory_limit (and --chunks) for a script that can run blockwise."""
    from .. import zarrio

    group = parser.add_argument_group(
        "large volumes (zarr + dask; see documentation/cluster.md)")
    group.add_argument("--scheduler", metavar="SPEC",
                       help="process blockwise on dask: local:N (a LocalCluster of N worker "
                            "processes on this machine) or tcp://HOST:PORT (a running dask "
                            "scheduler); inputs and outputs must then be .zarr stores. "
                            "Default: the whole volume in memory")
    group.add_argument("--memory_limit", metavar="BYTES",
                       help="memory limit of each local:N worker, e.g. 2GiB (default: the "
                            "machine's memory shared between the workers; at least "
                            f"{MIN_WORKER_MEMORY // 2**20} MiB)")
    if chunks:
        group.add_argument("--chunks", type=int, nargs=3, metavar=("Z", "Y", "X"),
                           help="chunk shape of the .zarr stores written (default "
                                f"{' '.join(map(str, zarrio.DEFAULT_CHUNKS))}, clipped to the "
                                "volume); with --scheduler also the blocks processed")
    return group


def check_arguments(args, inputs, outputs):
    """Check the engine options before any work: ``--scheduler`` needs every path in
    ``inputs`` and ``outputs`` (flag -> path) to be a .zarr store; --chunks and
    --memory_limit are well formed."""
    from .. import zarrio

    if getattr(args, "chunks", None) is not None:
        zarrio.check_chunks(args.chunks)
    if args.memory_limit is not None:
        if args.scheduler is None:
            raise ValueError("--memory_limit applies to --scheduler local:N")
        check_memory_limit(args.memory_limit)
    if args.scheduler is None:
        return
    parse_scheduler(args.scheduler)
    for flag, path in {**inputs, **outputs}.items():
        if path is not None and not zarrio.is_zarr(path):
            raise ValueError(f"--scheduler processes .zarr stores: {flag} must end in .zarr, "
                             f"got {path}")
