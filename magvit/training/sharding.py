"""Sharded training for both recipes: accelerate's FSDP2 and DeepSpeed ZeRO-2/3.

`Sharding.of(accelerator)` is None on the default path (one process, or DDP), which never reaches this
module. Launched with `accelerate launch --config_file configs/accelerate/{fsdp2,deepspeed_zero2,
deepspeed_zero3}.yaml`, a model's weights (FSDP2, ZeRO-3), gradients and optimizer state live in pieces
across the processes, and this is what changes:

- prepare: one model with its optimizer per `accelerator.prepare` call (accelerate's rule for both
  engines); each DeepSpeed engine gets its micro-batch and gradient clipping from the run's config.
- gradients: FSDP2 goes through accelerate as DDP does. DeepSpeed's `accelerator.backward` drives only
  the first engine prepared, so a second one (the tokenizer's discriminator) is driven directly
  (`common.apply_gradients(..., engine=)`).
- differentiating a network twice in one step (the tokenizer's R1 and adaptive GAN weight): DeepSpeed
  opens an engine's backward when a gradient first reaches its output and ZeRO-3 gathers a module's
  weights for one backward per forward, so under DeepSpeed each second differentiation gets a forward of
  its own (`training.tokenizer.TokenizerStep`); FSDP2 gathers the discriminator again (`regather`).
- EMA: under FSDP2 it is sharded like the model (its parameters become DTensors with the model's
  placements; the update is a local lerp, no communication). Under DeepSpeed it is a full copy on every
  process, updated from the gathered fp32 master weights (one gather of the weights per step).
- checkpoints: every process takes part in gathering full tensors; the main process writes them in
  magvit's own format, the same files a DDP run writes (a run can move between engines). `--resume`
  loads the full weights before `prepare` (which shards them) and the full optimizer state after it.
- validation and release weights: a plain copy on the main process, loaded from the gathered weights
  (every process takes part) before each validation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from magvit.errors import MagvitError

if TYPE_CHECKING:
    from accelerate import Accelerator

# the modules FSDP2 shards as one unit each under TRANSFORMER_BASED_WRAP (unless the accelerate config
# names its own fsdp_transformer_layer_cls_to_wrap): the transformer's block, the tokenizer's res block,
# the StyleGAN discriminator's block; each model gets those it has
WRAPPED_BLOCKS = ["Block", "ResBlock", "DownBlock"]


class Gathered:
    """A full state dict gathered from the shards, with the one method checkpoint writing calls."""

    def __init__(self, state: dict[str, Any]):
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state


class Sharding:
    """What a sharded engine needs besides `accelerator.prepare`; see the module docstring."""

    def __init__(self, accelerator: Accelerator, kind: str):
        self.accelerator, self.kind, self.main = accelerator, kind, accelerator.is_main_process
        # optimizer name -> (prepared model, its optimizer)
        self.pairs: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        self.names: dict[str, list[str]] = {}  # optimizer name -> parameter names in the optimizer's order
        self.eval_copy: nn.Module | None = None  # the main process's plain copy for validation and release
        plugin = accelerator.state.fsdp_plugin if kind == "fsdp2" else None
        self.config_blocks = plugin.transformer_cls_names_to_wrap if plugin is not None else None

    @staticmethod
    def of(accelerator: Accelerator) -> Sharding | None:
        from accelerate.utils import DistributedType

        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            return Sharding(accelerator, "deepspeed")
        if accelerator.distributed_type == DistributedType.FSDP:
            if not accelerator.is_fsdp2:
                raise MagvitError("FSDP version 1 is not supported: set fsdp_version: 2 "
                                  "(see configs/accelerate/fsdp2.yaml)")
            return Sharding(accelerator, "fsdp2")
        return None

    # ------------------------------------------------------------------ setup

    def prepare(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, batch_size: int,
                grad_clip: float | None) -> tuple[nn.Module, torch.optim.Optimizer]:
        """`accelerator.prepare(model, optimizer)`; the pair is kept under the optimizer's checkpoint name.
        The first model prepared also leaves a plain copy of itself on the main process (`eval_copy`)."""
        if self.eval_copy is None and self.main:
            self.eval_copy = copy.deepcopy(model).to(self.accelerator.device).eval().requires_grad_(False)
        by_id = {id(p): n for n, p in model.named_parameters()}
        self.names[name] = [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]
        if self.kind == "fsdp2":
            self._wrap_blocks_of(model)
        if self.kind == "deepspeed":  # read by deepspeed.initialize in this prepare call
            config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            config["train_micro_batch_size_per_gpu"] = batch_size
            config["gradient_clipping"] = float(grad_clip or 0.0)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        self.pairs[name] = (model, optimizer)
        return model, optimizer

    def _wrap_blocks_of(self, model: nn.Module) -> None:
        """accelerate keeps the block classes found in the first model prepared for every later one (the
        tokenizer's ResBlock would be looked for in the discriminator): each model gets its own."""
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        plugin = self.accelerator.state.fsdp_plugin
        if getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy) is not transformer_auto_wrap_policy:
            return
        present = {type(m).__name__ for m in model.modules()}
        plugin.auto_wrap_policy = transformer_auto_wrap_policy
        plugin.transformer_cls_names_to_wrap = self.config_blocks or [n for n in WRAPPED_BLOCKS if n in present]

    def shard_ema(self, ema: nn.Module, raw: nn.Module) -> None:
        """FSDP2: turn the EMA's parameters into shards placed like the model's (after both are on the
        device); every process holds the same full EMA before, so no communication is needed."""
        if self.kind != "fsdp2":
            return
        from torch.distributed.tensor import DTensor, distribute_tensor

        for (name, e), p in zip(list(ema.named_parameters()), raw.parameters()):
            if isinstance(p, DTensor):
                owner, _, leaf = name.rpartition(".")
                module = ema.get_submodule(owner)
                shard = distribute_tensor(e.detach(), p.device_mesh, p.placements, src_data_rank=None)
                module._parameters[leaf] = nn.Parameter(shard, requires_grad=False)

    # ------------------------------------------------------------------ per step

    @torch.no_grad()
    def update_ema(self, ema: nn.Module, raw: nn.Module, decay: float) -> None:
        """`common.update_ema` for this engine (FSDP2: on the local shards, the same code)."""
        from magvit.training.common import update_ema

        if self.kind == "fsdp2":
            return update_ema(ema, raw, decay)
        from deepspeed.utils import safe_get_full_fp32_param

        for e, p in zip(ema.parameters(), raw.parameters()):
            e.lerp_(safe_get_full_fp32_param(p).to(e.dtype), 1 - decay)  # collective: every process
        for e, b in zip(ema.buffers(), raw.buffers()):
            e.copy_(b)

    def regather(self, module: nn.Module) -> None:
        """All-gather `module`'s weights again. R1's penalty differentiates the discriminator twice
        (`autograd.grad` with `create_graph`, then `backward`); FSDP2 frees each unit's gathered weights
        at the end of the first, and the second reads them (a `no_reshard` around both would instead leave
        the gathered, gradient-less weights registered in the module, and clipping would see none)."""
        if self.kind != "fsdp2":
            return
        from torch.distributed.fsdp import FSDPModule

        for m in module.modules():
            if isinstance(m, FSDPModule):
                m.unshard()

    @contextmanager
    def gradients_set_aside(self, module: nn.Module) -> Iterator[None]:
        """The gradients a backward inside leaves in `module` are dropped; those it had are kept.

        The generator's GAN term backpropagates through the discriminator, which must not learn from it.
        DDP and DeepSpeed turn D's requires_grad off for that step; FSDP2 fixes each parameter's
        requires_grad at its first all-gather (turned off there, D's root unit never gets a gradient
        again), so under it D keeps requires_grad and its gradients of that backward are set aside."""
        params = list(module.parameters())
        held = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            yield
        finally:
            for p, g in zip(params, held):
                p.grad = g

    # ------------------------------------------------------------------ gathering (every process calls these)

    def full_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The module's full state dict, on the CPU of the main process (empty elsewhere)."""
        from torch.distributed.tensor import DTensor

        out = {}
        for key, value in module.state_dict(keep_vars=True).items():
            if isinstance(value, DTensor):
                value = value.full_tensor()
            elif hasattr(value, "ds_id") or hasattr(value, "_hp_mapping"):  # a ZeRO-partitioned parameter
                from deepspeed.utils import safe_get_full_fp32_param

                value = safe_get_full_fp32_param(value)
            if self.main:
                out[key] = value.detach().cpu()
        return out

    def refresh_eval_copy(self, module: nn.Module) -> None:
        """Load `module`'s gathered weights (the EMA's, or the model's) into the main process's plain copy."""
        state = self.full_state(module)
        if self.main:
            self.eval_copy.load_state_dict(state)

    def full_optimizer_state(self, name: str) -> dict:
        """The optimizer `name`'s full state in torch's own layout (`optimizer.state_dict()` of the same
        optimizer in a one-process run), on the main process (empty elsewhere)."""
        model, optimizer = self.pairs[name]
        names = self.names[name]
        if self.kind == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full = get_optimizer_state_dict(model, _inner(optimizer), options=options)
            if not self.main:
                return {}
            index = {n: i for i, n in enumerate(names)}
            state = {index[n]: slots for n, slots in full["state"].items()}
            groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
            return {"state": state, "param_groups": groups}
        from deepspeed.utils import safe_get_full_optimizer_state

        inner = model.optimizer.optimizer  # torch's AdamW over the engine's flat fp32 partitions
        slots = next(iter(inner.state.values()), {})
        keys = [k for k, v in slots.items() if torch.is_tensor(v) and v.dim() > 0]  # exp_avg, exp_avg_sq
        params = dict(model.module.named_parameters())
        state = {}
        for i, n in enumerate(names):
            values = {k: safe_get_full_optimizer_state(params[n], k) for k in keys}  # collective
            if self.main and values:
                state[i] = {"step": slots["step"].detach().cpu().clone(), **{k: v.cpu() for k, v in values.items()}}
        groups, first = [], 0
        for group, client in zip(inner.param_groups, self._client_group_sizes(name)):
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(first, first + client))})
            first += client
        return {"state": state, "param_groups": groups} if self.main else {}

    def load_optimizer_state(self, name: str, saved: dict) -> None:
        """Load a full optimizer state (torch's layout, as `checkpoint.read_optimizer_state` returns it)
        into the sharded optimizer `name`; every process passes the same full state."""
        model, optimizer = self.pairs[name]
        names = self.names[name]
        if self.kind == "fsdp2":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            full = {"state": {names[int(i)]: slots for i, slots in saved["state"].items()},
                    "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]}
            set_optimizer_state_dict(model, _inner(optimizer), full,
                                     options=StateDictOptions(full_state_dict=True))
            return
        from deepspeed.utils import safe_set_full_optimizer_state

        zero = model.optimizer  # the engine's ZeRO optimizer; DeepSpeed's own API below (safe_*) and its
        inner = zero.optimizer  # flat fp32 partitions (attributes of ZeRO-3 and of ZeRO-1/2) are not public
        if len(saved["state"]) == 0:
            return
        first = saved["state"][min(saved["state"], key=int)]
        for group, client in zip(inner.param_groups, saved["param_groups"]):
            group.update({k: v for k, v in client.items() if k not in ("params", "lr")})  # lr: set every step
        flats = getattr(zero, "fp32_partitioned_groups_flat", None) or zero.single_partition_of_fp32_groups
        for flat in flats:  # torch's lazily made AdamW state, made here to be filled below
            inner.state[flat] = {"step": torch.as_tensor(first["step"], dtype=torch.float32).clone(),
                                 **{k: torch.zeros_like(flat) for k in first if k != "step"}}
        if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2: point each parameter at its piece
            zero._hp_optimizer_states_linked = False
            zero._lazy_init_hp_params_optimizer_state()
        params = dict(model.module.named_parameters())
        for i, n in enumerate(names):
            put = _set_zero3_optimizer_piece if hasattr(params[n], "ds_tensor") else safe_set_full_optimizer_state
            for k, v in saved["state"][i].items():
                if k != "step":
                    put(params[n], v.to(self.accelerator.device), k)

    def load_optimizers(self, checkpoint: Path) -> None:
        """Every optimizer's full state from `checkpoint`, checked against this run's parameters first:
        a checkpoint of another kind of run or model is refused in one line, as the unsharded resume does."""
        from magvit.training.checkpoint import read_optimizer_state

        for name in self.pairs:
            saved = read_optimizer_state(checkpoint, name)
            held = [len(g["params"]) for g in saved["param_groups"]]
            if held != self._client_group_sizes(name) or any(int(i) >= sum(held) for i in saved["state"]):
                raise MagvitError(f"{checkpoint}: optimizer state {name} holds parameter groups of {held} "
                                  f"parameters; this run's has {self._client_group_sizes(name)}")
            self.load_optimizer_state(name, saved)

    def gathered(self, modules: Mapping[str, nn.Module]) -> tuple[dict[str, Gathered], dict[str, Gathered]]:
        """The modules and optimizers of a checkpoint, gathered (every process calls this; the main
        process writes them with `checkpoint.save_checkpoint`)."""
        return ({k: Gathered(self.full_state(m)) for k, m in modules.items()},
                {k: Gathered(self.full_optimizer_state(k)) for k in self.pairs})

    def _client_group_sizes(self, name: str) -> list[int]:
        return [len(self.names[name])]  # both recipes build one parameter group per optimizer


def _set_zero3_optimizer_piece(param: nn.Parameter, full: torch.Tensor, key: str) -> None:
    """This process's piece of a ZeRO-3 parameter's optimizer state `key` from its full value. DeepSpeed's
    `safe_set_full_optimizer_state` (0.19.8) reads past the end of a parameter whose size does not divide by
    the process count (the last piece is padded: a 3-channel bias over 2 processes has pieces of 2), so the
    piece is cut here, the padding left at zero, through the same ZeRO-3 optimizer calls it makes."""
    zero = param._z3_optimizer
    piece, group = zero._get_fp32_opt_state_partition(param, release_swap_buffers=False, optim_state_key=key)
    start = piece.numel() * zero._get_param_partition_rank(param)
    mine = full.flatten()[start:start + piece.numel()]
    piece.data.zero_()
    piece.data[:mine.numel()].copy_(mine)
    if zero._swappable_optimizer_subgroup(group):  # optimizer state offloaded to NVMe
        zero._optimizer_states_and_gradient_swap_out(group)


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (an `AcceleratedOptimizer`), or `optimizer` itself."""
    return getattr(optimizer, "optimizer", optimizer)
