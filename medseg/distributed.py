"""Many processes under torchrun: which rank this process is, the process group (gloo on a CPU, NCCL on CUDA),
values the ranks agree on, work done once on rank 0 and handed to the others, and cases shared out by rank.

torchrun (``torch.distributed.run``) tells each process its place through environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``TORCHELASTIC_RESTART_COUNT``); :func:`torchrun_role` is
the one place medseg reads them. Everything else asks a :class:`RankGroup`, which is a single process (rank 0 of
1, every method a no-op) when no process group is running.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import torch
from torch import nn

from medseg.errors import MedsegError

T = TypeVar("T")

# A collective waits this long for a slow peer (rank 0 planning or preprocessing while the others wait); a peer
# that died is noticed at once (its socket closes, and torchrun stops the group).
COLLECTIVE_TIMEOUT = timedelta(hours=4)


@dataclass(frozen=True)
class TorchrunRole:
    """This process's place in a torchrun job (a lone process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int = 0

    @property
    def launched(self) -> bool:
        return self.world_size > 1


def torchrun_role(environ: Mapping[str, str] | None = None) -> TorchrunRole:
    """The role torchrun gave this process (``environ`` default: ``os.environ``); a lone process without it."""
    environ = os.environ if environ is None else environ
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return TorchrunRole()
    try:
        world = int(environ["WORLD_SIZE"])
        return TorchrunRole(rank=int(environ["RANK"]), world_size=world,
                            local_rank=int(environ.get("LOCAL_RANK", 0)),
                            local_world_size=int(environ.get("LOCAL_WORLD_SIZE", world)),
                            restart_count=int(environ.get("TORCHELASTIC_RESTART_COUNT", 0)))
    except ValueError:
        raise MedsegError(f"RANK={environ.get('RANK')!r} / WORLD_SIZE={environ.get('WORLD_SIZE')!r} are not "
                          "integers", fix="start medseg with torchrun, which sets them") from None


def backend_for(device: str | torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


class RankGroup:
    """The running process group as the trainer sees it: rank, world size and the collectives it needs.

    Without a process group (one process) ``rank`` is 0, ``world_size`` 1 and every collective returns its
    input. ``device``: where the collectives' tensors live (CUDA for NCCL).
    """

    def __init__(self, device: str | torch.device = "cpu"):
        import torch.distributed as dist

        self.running = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.running else 0
        self.world_size = dist.get_world_size() if self.running else 1
        self.device = torch.device(device) if self.running and dist.get_backend() == "nccl" else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def agree_max(self, value: float) -> float:
        """The largest ``value`` over the ranks (the budget clock: all ranks stop at the same step)."""
        return self._reduce(value, "max")

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (a loss averaged over the whole data-parallel batch)."""
        return self._reduce(value, "sum") / self.world_size

    def _reduce(self, value: float, op: str) -> float:
        if not self.parallel:
            return float(value)
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return float(tensor.item())

    def data_parallel(self, network: nn.Module) -> nn.Module:
        """``network`` wrapped in ``DistributedDataParallel`` (gradients averaged over the ranks, parameters
        broadcast from rank 0 at the start), or ``network`` itself in one process. Parameters a step leaves
        unused (the coarsest deep-supervision head, weighted 0) are allowed."""
        if not self.parallel:
            return network
        from torch.nn.parallel import DistributedDataParallel

        device = next(network.parameters()).device
        return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=True)

    def run_on_main(self, function: Callable[[], T], *, shared: Callable[[T], T] | None = None) -> T:
        """``function()`` on rank 0 only; its result (or its ``MedsegError``) is handed to every rank, so work
        that writes files (planning, preprocessing, the model folder) happens once and the others wait for it.
        ``shared(result)``: what the other ranks receive (default: the result itself); rank 0 keeps the result."""
        if not self.parallel:
            return function()
        import torch.distributed as dist

        if self.is_main:
            try:
                result = function()
            except MedsegError as error:
                dist.broadcast_object_list([("user error", str(error))], src=0)
                raise
            except Exception as error:
                dist.broadcast_object_list([("crash", f"{type(error).__name__}: {error}")], src=0)
                raise
            dist.broadcast_object_list([("ok", result if shared is None else shared(result))], src=0)
            return result
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "user error":
            raise MedsegError(f"on rank 0: {value}")
        if kind == "crash":
            raise RuntimeError(f"rank 0 failed: {value}")
        return value


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[RankGroup]:
    """A :class:`RankGroup` for this process: under torchrun, the process group started here (gloo on a CPU,
    NCCL on CUDA, each local rank on its own GPU) and ended on exit; an already running group is used as it is;
    a lone process gets the one-process group."""
    import torch.distributed as dist

    role = torchrun_role()
    if not role.launched or (dist.is_available() and dist.is_initialized()):
        if role.launched and torch.device(device).type == "cuda":
            torch.cuda.set_device(role.local_rank)
        yield RankGroup(device)
        return
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(role.local_rank)
    dist.init_process_group(backend_for(device), timeout=COLLECTIVE_TIMEOUT)
    try:
        yield RankGroup(device)
        # Every rank done with every collective before any tears its connections down: a rank that destroys
        # the group while a peer is still in its last collective (or still holds a DDP reducer) can abort in
        # gloo's threads ("terminate called without an active exception"). Skipped on an error, where the peers
        # may never arrive.
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def processes_on_this_machine() -> int:
    """How many processes torchrun started on this machine (1 without torchrun): they share its cores."""
    return torchrun_role().local_world_size


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``, with ``0 <= i < n``."""
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit() or not 0 <= int(index) < int(count):
        raise MedsegError(f"--shard {text!r} is not i/n with 0 <= i < n", fix="use e.g. --shard 0/2 and --shard 1/2")
    return int(index), int(count)


def prediction_shard(shard: str | None) -> tuple[int, int]:
    """Which share of the cases this process predicts: ``--shard i/n`` when given, else torchrun's rank of its
    world size, else all of them (0 of 1)."""
    role = torchrun_role()
    if shard is not None:
        if role.launched:
            raise MedsegError(f"--shard {shard} under torchrun (rank {role.rank} of {role.world_size})",
                              fix="give --shard for independent processes, or run under torchrun without it")
        return parse_shard(shard)
    return role.rank, role.world_size


def shard_items(items: Sequence[T], index: int, count: int) -> list[T]:
    """Items ``index, index + count, ...``: the shards of ``0..count-1`` hold every item exactly once."""
    return list(items[index::count])


def launch_local(nproc: int, module_args: Sequence[str], *, max_restarts: int = 0) -> int:
    """Run ``python -m medseg <module_args>`` in ``nproc`` processes on this machine through torchrun
    (``torch.distributed.run --standalone``: a rendezvous on localhost); returns the exit code (that of the first
    failed rank, 0 when all succeed). torchrun restarts the whole group up to ``max_restarts`` times after a
    rank fails."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise MedsegError(f"--nproc {nproc}", fix="use 1 or more processes")
    args = parse_args(["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), "--max-restarts",
                       str(max_restarts), "-m", "medseg", *module_args])
    try:
        run(args)
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values() if failure.exitcode]
        return next((code for code in codes if code > 0), 1)
    return 0
