"""The run folder `runs/<name>/`: metrics, TensorBoard, progress, checkpoints, the final model.

Layout:

    runs/<name>/
      config.yaml                  the resolved config (defaults + YAML + overrides)
      metrics.jsonl                one JSON object per logged step: {"step", "time", ...}; eval rows' keys start "eval/"
                                   (a NaN or infinite value is written as null)
      tb/                          the same scalars for TensorBoard
      checkpoints/step_<N>/        written atomically (mgrd.atomic): trainable.safetensors (the trainable tensors;
                                   frozen ones are rebuilt from the model's source), optimizer.pt, rng.pt (python,
                                   numpy, torch and CUDA generators of every rank), state.json (step, scheduler, data
                                   position, and the model fingerprint a resume is checked against)
      final/                       the trained model, official layout, with its tokenizer (`mgrd generate` loads it)
      final_lora/                  with LoRA: the LoRA matrices alone in peft's layout (adapter_config.json +
                                   adapter_model.safetensors); a trained audio adapter is in final/ only
      done.json                    written last: the run finished

`RunDir` writes all of it and reads a checkpoint back for `--resume`; model and optimizer states go through
`torch.distributed.checkpoint.state_dict`, so the same code saves a plain, DDP or FSDP2-sharded model (every
rank calls the save; the main rank writes). It does no training and chooses no schedule.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mgrd.atomic import atomic_folder, atomic_write

STEP_PREFIX = "step_"


class CheckpointMismatchError(ValueError):
    """A checkpoint written for another model (or another set of trainable parameters) than this run's."""


class RunExistsError(ValueError):
    """A run folder that already holds a run, opened without --resume."""


class RunDir:
    """One run's folder. Only the main rank writes files; every rank may call every method.

    Args:
        path: the run folder (`RunConfig.path`).
        is_main: this process writes (rank 0).
        tensorboard: also write scalars under `tb/`.
    """

    def __init__(self, path: str | os.PathLike, *, is_main: bool = True, tensorboard: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        self._use_tb = tensorboard
        self._tb = None
        self._bar = None

    # ------------------------------------------------------------------------------------------ folder

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def final(self) -> Path:
        return self.path / "final"

    def prepare(self, config: dict, resume: bool) -> None:
        """Create the folder and write `config.yaml`.

        Raises:
            RunExistsError: the folder already holds a run (metrics or checkpoints) and `resume` is False.
        """
        held = [p.name for p in (self.metrics_path, self.checkpoints, self.final) if p.exists()]
        if held and not resume:
            raise RunExistsError(f"{self.path} already holds a run ({', '.join(held)}): pass --resume to continue "
                                 "it, or choose another run.name")
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "done.json").unlink(missing_ok=True)  # a resumed run is not done until it finishes again
        if resume and (self.path / "config.yaml").is_file():
            _warn_changes(yaml.safe_load((self.path / "config.yaml").read_text()) or {}, plain(config))
        _write_text(self.path / "config.yaml", yaml.safe_dump(plain(config), sort_keys=False))

    # ------------------------------------------------------------------------------------------ metrics

    def log(self, step: int, metrics: dict[str, Any]) -> dict:
        """Append one row `{"step", "time", **metrics}` to metrics.jsonl and TensorBoard; returns the row."""
        row = {"step": int(step), "time": round(time.time(), 3)}
        row.update({k: _scalar(v) for k, v in metrics.items()})
        if self.is_main:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
            writer = self._writer()
            if writer is not None:
                for key, value in row.items():
                    if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                        writer.add_scalar(key, value, step)
                writer.flush()
        return row

    def read_metrics(self) -> list[dict]:
        """Every row of metrics.jsonl (a torn last line, from a killed run, is ignored)."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Keep only the rows up to `step` (a resumed run logs the later steps again)."""
        if not self.is_main or not self.metrics_path.is_file():
            return
        kept = [row for row in self.read_metrics() if row.get("step", 0) <= step]
        _write_text(self.metrics_path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))

    def _writer(self):
        if self._tb is None and self._use_tb and self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path / "tb"))
        return self._tb

    def progress(self, total: int, initial: int = 0, enabled: bool = True):
        """A tqdm bar over optimiser steps (with ETA); disabled off the main rank."""
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=self.path.name, unit="step", dynamic_ncols=True,
                         disable=not (enabled and self.is_main))
        return self._bar

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------------------------------ checkpoints

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"{STEP_PREFIX}{step}"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """The complete step checkpoints, oldest first (temporary folders of killed saves are not listed)."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            if p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit() and (p / "state.json").is_file():
                found.append((int(p.name[len(STEP_PREFIX):]), p))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        found = self.list_checkpoints()
        return found[-1][1] if found else None

    def save_checkpoint(self, step: int, model, optimizer, state: dict, fingerprint: dict, keep: int = 0) -> Path:
        """Write `checkpoints/step_<step>/` atomically; every rank calls it (the main rank writes).

        Args:
            step: optimiser steps done.
            model, optimizer: the (possibly wrapped) model and its optimizer.
            state: JSON data to restore (scheduler state, data position, counters).
            fingerprint: `model_fingerprint(...)` of this run's model; a resume compares against it.
            keep: keep the newest `keep` checkpoints (0 keeps all).
        """
        model_state, optim_state = _get_states(model, optimizer)
        rng = _gather_rng()
        target = self.checkpoint_path(step)
        if self.is_main:
            from safetensors.torch import save_file

            with atomic_folder(target, overwrite=True) as tmp:
                save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()},
                          tmp / "trainable.safetensors", metadata={"format": "pt"})
                torch.save(optim_state, tmp / "optimizer.pt")
                torch.save(rng, tmp / "rng.pt")
                doc = {"step": step, "fingerprint": fingerprint, "state": state}
                (tmp / "state.json").write_text(json.dumps(plain(doc), indent=1) + "\n")
            if keep:
                for _, old in self.list_checkpoints()[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return target

    def load_checkpoint(self, path: Path, model, optimizer, fingerprint: dict) -> tuple[int, dict]:
        """Restore model (trainable tensors), optimizer and this rank's RNG from a checkpoint folder.

        Returns:
            (step, state) as saved.
        Raises:
            CheckpointMismatchError: the checkpoint was written for another model or trainable set.
            FileNotFoundError: a file of the checkpoint is missing.
        """
        path = Path(path)
        doc = json.loads((path / "state.json").read_text())
        problems = fingerprint_diff(doc.get("fingerprint") or {}, fingerprint)
        if problems:
            raise CheckpointMismatchError(f"{path} was written for another model: " + "; ".join(problems[:6]))
        from safetensors.torch import load_file

        model_state = load_file(path / "trainable.safetensors")
        optim_state = torch.load(path / "optimizer.pt", weights_only=True)
        _set_states(model, optimizer, model_state, optim_state)
        _restore_rng(torch.load(path / "rng.pt", weights_only=False))
        return int(doc["step"]), doc["state"]

    # ------------------------------------------------------------------------------------------ final

    def save_final(self, model, tokenizer, lora_config: dict | None = None) -> Path:
        """Write `final/` in the official layout with the tokenizer (LoRA merged); every rank calls it.

        The full state is gathered (FSDP2: onto the main rank's CPU), put into a fresh unwrapped model, LoRA
        folded in (`optim.merge_lora`), and saved with `mgrd.models.save_pretrained`. With LoRA the adapter
        alone also goes to `final_lora/` in peft's layout.
        """
        full = _full_state(model)
        if self.is_main:
            from mgrd.models import save_pretrained
            from mgrd.train.optim import merge_lora

            plain_model = rebuild_model(_unwrap(model).config, full, lora_config=lora_config)
            if lora_config is not None:
                self._save_lora(full, lora_config)
                merge_lora(plain_model)
            save_pretrained(plain_model, self.final, tokenizer=tokenizer, overwrite=True)
        _barrier()
        return self.final

    def _save_lora(self, full: dict, lora_config: dict) -> None:
        from safetensors.torch import save_file

        with atomic_folder(self.path / "final_lora", overwrite=True) as tmp:
            # peft's names for a PeftModel around the whole AudioReasoner: `base_model.model.` + the tensor's name,
            # without the adapter name ("default"); `PeftModel.from_pretrained(base, final_lora)` loads them
            adapter = {"base_model.model." + k.replace(".default.", "."): v.contiguous()
                       for k, v in full.items() if "lora_" in k}
            save_file(adapter, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
            (tmp / "adapter_config.json").write_text(json.dumps(plain(lora_config), indent=2) + "\n")

    def finish(self, summary: dict) -> None:
        """Write `done.json` (the stage's done marker) and close the writers."""
        if self.is_main:
            _write_text(self.path / "done.json", json.dumps(plain(summary), indent=1) + "\n")
        self.close()


# ---------------------------------------------------------------------------------------------- model states


def model_fingerprint(model, trainable: list[str] | None = None) -> dict:
    """What a checkpoint must match: the model's config (architecture) and its trainable tensors' shapes.

    Args:
        model: the unwrapped `AudioReasoner` (before DDP/FSDP2 wrapping).
        trainable: names of the trainable parameters (default: those that require grad).
    """
    config = model.config.to_dict()
    for key in ("torch_dtype", "dtype"):
        config.pop(key, None)
    names = trainable if trainable is not None else [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = dict(model.named_parameters())
    return {"config": plain(config), "trainable": {n: list(shapes[n].shape) for n in names}}


def fingerprint_diff(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they match)."""
    problems = []
    a, b = _flatten(saved.get("config", {})), _flatten(current.get("config", {}))
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            problems.append(f"config {key} is {a.get(key)!r} there, {b.get(key)!r} here")
    ta, tb = saved.get("trainable", {}), current.get("trainable", {})
    missing, extra = sorted(set(tb) - set(ta)), sorted(set(ta) - set(tb))
    if missing:
        problems.append(f"{len(missing)} trainable tensor(s) not in the checkpoint, e.g. {missing[0]}")
    if extra:
        problems.append(f"{len(extra)} checkpoint tensor(s) not trainable here, e.g. {extra[0]}")
    shapes = [k for k in sorted(set(ta) & set(tb)) if list(ta[k]) != list(tb[k])]
    if shapes:
        first = shapes[0]
        problems.append(f"{len(shapes)} tensor(s) of another shape, e.g. {first} {ta[first]} vs {tb[first]}")
    return problems


def rebuild_model(config, state: dict, lora_config: dict | None = None):
    """A plain `AudioReasoner` holding `state` (full, unwrapped tensor names), built on the meta device first.

    With `lora_config` (`optim.lora_config_dict`), its LoRA layers are injected before loading (merge them with
    `merge_lora`).
    """
    from mgrd.models import AudioReasoner

    with torch.device("meta"):
        model = AudioReasoner(config)
    if lora_config is not None:
        from peft import LoraConfig, inject_adapter_in_model

        keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias")
        inject_adapter_in_model(LoraConfig(**{k: lora_config[k] for k in keys}), model.model)
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_rotary()
    return model.eval()


def _get_states(model, optimizer) -> tuple[dict, dict]:
    """The trainable tensors (full, on CPU) and the optimizer state (keyed by tensor names)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=_distributed(), cpu_offload=True, ignore_frozen_params=True)
    return get_state_dict(model, optimizer, options=options)


def _set_states(model, optimizer, model_state: dict, optim_state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    options = StateDictOptions(full_state_dict=_distributed(), strict=False)
    incompatible = set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                                  options=options)
    unexpected = list(getattr(incompatible, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointMismatchError(f"checkpoint holds tensors this model lacks: {unexpected[:4]}")


def _full_state(model) -> dict:
    """Every tensor of the model, full and on CPU (gathered under FSDP2), with unwrapped names."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=_distributed(), cpu_offload=True)
    return get_model_state_dict(model, options=options)


def _unwrap(model):
    from mgrd.train.distributed import unwrap

    return unwrap(model)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _barrier() -> None:
    if _distributed():
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """This process's random generators: python, numpy, torch CPU and (when present) every CUDA device."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng() -> list[dict]:
    """Every rank's generators, in rank order (collected on all ranks; the main one writes them)."""
    mine = rng_state()
    if not _distributed():
        return [mine]
    out: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, mine)
    return out


def _restore_rng(states: list[dict]) -> None:
    rank = torch.distributed.get_rank() if _distributed() else 0
    if rank >= len(states):
        warnings.warn(f"the checkpoint holds RNG states of {len(states)} rank(s); rank {rank} keeps its own "
                      "(the continuation is not bit-exact)", stacklevel=3)
        return
    set_rng_state(states[rank])


# ---------------------------------------------------------------------------------------------- helpers


def plain(value):
    """A config or state as YAML/JSON data: dataclasses as dicts, tuples and sets as lists, paths as strings."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if hasattr(value, "value") and type(value).__module__.startswith("peft"):  # peft's enums
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _scalar(value):
    """A metric as JSON data; a NaN or infinite number becomes null (metrics.jsonl stays strict JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _warn_changes(old: dict, new: dict) -> None:
    a, b = _flatten(old), _flatten(new)
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k != "run.resume"]
    if changed:
        warnings.warn(f"resuming with a changed config ({', '.join(changed[:6])}); the continuation is not the "
                      "uninterrupted run", stacklevel=3)


def _write_text(path: Path, text: str) -> None:
    """Write a small file whole (`mgrd.atomic.atomic_write`): a reader never sees half of it."""
    atomic_write(path, text.encode("utf-8"))
