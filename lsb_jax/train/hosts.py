"""Several processes (multi-host JAX): values every process can read, and who writes files.

With `jax.distributed` initialized, an array sharded over the devices of several processes is not
readable by any one of them (`jax.device_get` raises). `to_host` gathers such arrays (a collective:
every process calls it at the same point of the same program, as they all run the same code) and
reads the others as usual; with one process it is `jax.device_get`. Who writes which files is the
runner's business (`runner.run_experiment`: process 0 owns the run folder, process i > 0 writes its
own beside it; orbax writes one checkpoint with every process).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

import jax
import numpy as np


def to_host(tree: Any) -> Any:
    """`tree` with every jax.Array as a numpy array of its global value (gathered across processes
    when it spans devices of other processes)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    def read(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x)) if isinstance(x, jax.Array) else x

    return jax.tree.map(read, tree)


def maybe_initialize_distributed(env: dict | None = None) -> bool:
    """`jax.distributed.initialize()` when the environment asks for it; returns whether it did.

    Triggers: LSB_DISTRIBUTED=1 (TPU VMs and SLURM/GKE clusters: JAX detects the coordinator),
    or JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID (explicit). Call it
    before anything touches a device (`lsb run` does, first); calling it again is a no-op. CPU
    processes talk through gloo (the CPU collectives), so a multi-process run also works on CPUs.
    """
    env = os.environ if env is None else env
    explicit = env.get("JAX_COORDINATOR_ADDRESS")
    if not explicit and env.get("LSB_DISTRIBUTED", "").lower() not in ("1", "true", "yes"):
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k)]
        if missing:
            from lsb_jax.errors import UsageError  # noqa: PLC0415
            raise UsageError(f"JAX_COORDINATOR_ADDRESS={explicit} is set but {' and '.join(missing)} "
                             "are not: set all three (or LSB_DISTRIBUTED=1 where JAX finds them itself)")
        jax.distributed.initialize(coordinator_address=explicit, num_processes=int(env["JAX_NUM_PROCESSES"]),
                                   process_id=int(env["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
    return True


def use_cpu_cores(devices: int | str | None = "auto", env: dict | None = None) -> int | None:
    """Splits the host CPU into `devices` JAX devices ("auto": one per core this process may run
    on; None: leave JAX's setting); returns the count set, or None when nothing was set.

    JAX sees a CPU as one device, and XLA spreads only each single op over the cores: the tiny ops
    of a vmapped ensemble of small models hardly split. With several CPU devices a sweep splits
    its members over them (`train.member_mesh`) and each core steps its own block. Only the CPU
    backend changes (an accelerator's devices stay as they are). An explicit choice is left
    alone: JAX_NUM_CPU_DEVICES, or XLA_FLAGS with --xla_force_host_platform_device_count. Call
    it before any JAX computation (`lsb --cpu-devices` does).
    """
    env = os.environ if env is None else env
    if devices is None or env.get("JAX_NUM_CPU_DEVICES") or \
            "xla_force_host_platform_device_count" in env.get("XLA_FLAGS", ""):
        return None
    from lsb_jax.errors import UsageError  # noqa: PLC0415
    if devices == "auto":
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    else:
        try:
            n = int(devices)
        except ValueError:
            n = 0
        if n < 1:
            raise UsageError(f"cpu devices: need a count >= 1 or 'auto', got {devices!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        raise UsageError(f"cpu devices: JAX already started with {jax.config.jax_num_cpu_devices} "
                         f"(-1: its default), cannot make it {n}: set it before any JAX computation") from None
    return n


def compile_cache_dir(choice: str | None = None, env: dict | None = None) -> str | None:
    """The folder `use_compile_cache(choice)` keeps compiled programs in, or None for no cache
    (pure: reads `env`, default os.environ; touches nothing).

    choice: a folder, "off", or None for the default: $LSB_COMPILE_CACHE (a folder or "off") if
    set, else a folder JAX was given itself (JAX_COMPILATION_CACHE_DIR), else
    $XDG_CACHE_HOME/lsb_jax/jax (XDG_CACHE_HOME defaults to ~/.cache)."""
    env = os.environ if env is None else env
    if choice is None:
        choice = env.get("LSB_COMPILE_CACHE") or env.get("JAX_COMPILATION_CACHE_DIR")
    if choice is None:
        base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "lsb_jax", "jax")
    if choice.strip().lower() in ("", "off", "none", "0", "false", "no"):
        return None
    return os.path.abspath(os.path.expanduser(choice))


def use_compile_cache(choice: str | None = None, env: dict | None = None) -> str | None:
    """Keeps this process's compiled XLA programs on disk (JAX's persistent compilation cache), so
    that a run started again (a rerun, `--resume`, another experiment with the same programs)
    loads them instead of compiling them; returns the folder, or None when off (`lsb` calls it
    before any computation: `lsb --compile-cache DIR|off`).

    `choice` as `compile_cache_dir` resolves it. Every program is kept, however short its
    compile (JAX keeps only those over a second by default, and most compiles of the quick
    configs are shorter), unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise. A
    program is found again only under the same HLO, compiler options, devices (JAX hashes the
    devices' topology, which on a CPU holds its instruction-set features) and jax/jaxlib
    versions, and the loaded program is the one that was compiled: results are the same as
    without the cache. The folder grows with every new program (JAX_COMPILATION_CACHE_MAX_SIZE,
    in bytes, caps it); deleting it is safe. An entry cut short by a killed process is reported by
    JAX as unreadable and compiled again (a warning naming the program) until the folder is
    deleted. With several processes only process 0 writes (JAX; `docs/tpu.md`). Anyone who can
    write to the folder can run code in this process (JAX's warning), so a folder made here is
    private to its owner. A folder given (the flag, LSB_COMPILE_CACHE, JAX_COMPILATION_CACHE_DIR)
    that cannot be made or written is a UsageError; the default one falls back to no cache.
    """
    env = os.environ if env is None else env
    explicit = choice is not None or bool(env.get("LSB_COMPILE_CACHE") or env.get("JAX_COMPILATION_CACHE_DIR"))
    path = compile_cache_dir(choice, env)
    if path is not None:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable", path)
        except OSError as e:
            if explicit:
                from lsb_jax.errors import UsageError  # noqa: PLC0415
                raise UsageError(f"compile cache: cannot use {path}: {e.strerror or e}") from None
            path = None
    jax.config.update("jax_enable_compilation_cache", path is not None)
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", path)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _reset_compile_cache()     # JAX opens its cache once: a later call (a notebook) takes effect too
    return path


def _reset_compile_cache() -> None:
    """Makes JAX open its cache again with the settings now in its config (it opens it once)."""
    from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415
    reset = getattr(compilation_cache, "reset_cache", None)
    if reset is not None:
        reset()


def compile_cache_in_use() -> str | None:
    """The folder this process's compiled programs are kept in, or None (what a run records)."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4        # glibc <malloc.h> mallopt parameters


def keep_cpu_buffers() -> dict:
    """Per-call CPU programs reuse their scratch memory instead of faulting in fresh pages; returns
    what it set. Call it before the first JAX computation (a UsageError after).

    XLA:CPU allocates a program's temporary buffer at every call. JAX runs a one-device CPU program
    on a dispatch thread of its own, and glibc gives such a thread's large blocks (and, on any
    thread, blocks above its mmap threshold, 32 MiB at most) as fresh mappings, unmapped when freed:
    each call the kernel zero-fills every page of the buffer again on first touch (what that costs
    the ICL GPT-2 step: `benchmarks/gpt2_step.py --keep-cpu-buffers`). `train.fit` pays this once
    per compiled segment; code that calls a jitted step once per step pays it every step. This runs
    one-device CPU programs on the calling thread (`jax_cpu_enable_async_dispatch` off) and makes
    glibc's malloc keep freed blocks in its heap for reuse (no mmap for large blocks, no trimming),
    so from the second call on the buffer's pages are already there. Now and then one call still
    faults in a fresh buffer: the heap grows by one buffer, whose pages later calls then reuse.

    The cost: the process keeps the memory it freed (its resident size stays at its peak), a call
    returns only when its program is done (no overlap of Python with the computation), and
    programs over several devices (`use_cpu_cores`) keep async dispatch on their own threads. The
    arithmetic is unchanged. Without glibc only the dispatch part is set.
    """
    from lsb_jax.errors import UsageError  # noqa: PLC0415
    try:
        from jax._src import xla_bridge  # noqa: PLC0415  (no public test for a started backend)
        started = getattr(xla_bridge, "backends_are_initialized", None)
    except ImportError:
        started = None
    if started is not None and started():
        raise UsageError("keep_cpu_buffers: JAX has already started its backends; call it before any JAX "
                         "computation")
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    out = {"cpu_async_dispatch": False, "malloc": "unchanged (not glibc)"}
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL("libc.so.6")
        # -1: no trimming at all (`man mallopt`); a finite int threshold (2 GiB at most) would still
        # hand back a larger buffer (the L12 ICL step's is several GiB) at every call
        if libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1):
            out["malloc"] = "glibc keeps freed blocks (mmap_max 0, no trimming)"
    return out
