"""Checkpoints in the official Step-Audio 2 / R1 layout, and models built from Qwen2-Audio + Qwen2.5 parts.

Official layout: `config.json` (model_type `step_audio_2`) + `model.safetensors` or sharded
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`; tensors `encoder.*`, `adapter.*`,
`model.*` (a Qwen2Model) and `lm_head.weight`. Loading needs no conversion and saving writes the same
layout. The mapping from transformers' Qwen2-Audio names (`audio_tower.*`) lives only here.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from mgrd.atomic import atomic_folder
from mgrd.models.config import AudioEncoderConfig, ConfigError, ModelConfig, read_json_object
from mgrd.models.reasoner import AudioReasoner
from mgrd.tokenizer import SpecialTokenIds

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# The released checkpoints' vocabulary and placeholder ids (151688..151690); the ids are used only when
# neither a tokenizer nor the config says otherwise and the vocabulary is the released one.
RELEASED_VOCAB = 158_720
OFFICIAL_AUDIO_TOKEN_IDS = SpecialTokenIds(audio_start=151688, audio_end=151689, audio_patch=151690)


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as asked."""


# ----------------------------------------------------------------------------------------------- files
def weight_files(path: str | Path) -> list[Path]:
    """A folder's weight files: the shards its `model.safetensors.index.json` names, or `model.safetensors`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    if (path / INDEX_NAME).is_file():
        try:
            index = json.loads((path / INDEX_NAME).read_text())
            names = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{path / INDEX_NAME}: not a safetensors index ({err!r})") from None
    elif (path / SINGLE_NAME).is_file():
        names = [SINGLE_NAME]
    else:
        names = sorted(p.name for p in path.glob("model*.safetensors"))  # shards without an index
    if not names:
        raise CheckpointError(f"no model*.safetensors weights in {path}")
    for name in names:
        if (path / name).exists() and not (path / name).is_file():
            raise CheckpointError(f"{path / name} is not a file")
        if not (path / name).is_file():
            raise CheckpointError(f"{path / INDEX_NAME} lists {name}, which is missing")
    return [path / name for name in names]


@contextlib.contextmanager
def _open_weights(file: Path, device: str | torch.device = "cpu"):
    """`safe_open` with a clear error for a damaged file."""
    try:
        with safe_open(file, framework="pt", device=str(device)) as f:
            yield f
    except SafetensorError as err:
        raise CheckpointError(f"{file}: cannot read safetensors ({err})") from None
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read ({err.strerror or err})") from None


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, read from the file headers only (no weights are loaded)."""
    shapes = {}
    for file in weight_files(path):
        with _open_weights(file) as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's weight files (for small checkpoints, e.g. the parts of a new model)."""
    state = {}
    for file in weight_files(path):
        with _open_weights(file) as f:
            state.update({key: f.get_tensor(key) for key in f.keys()})
    return state


def write_state_dict(state: dict[str, torch.Tensor], path: Path, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write tensors as one `model.safetensors` or as shards plus the HF index, into an existing folder."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        t = state[key].detach().contiguous().cpu()
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], path / SINGLE_NAME, metadata=metadata)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / name, metadata=metadata)
        for key, t in shard.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


# ------------------------------------------------------------------------------------- official layout
def load_pretrained(
    path: str | Path,
    *,
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
    special_ids: SpecialTokenIds | None = None,
    tokenizer=None,
    freeze_encoder: bool = True,
) -> AudioReasoner:
    """Load a checkpoint folder in the official layout, one weight file at a time.

    Args:
        path: folder with `config.json` and `model.safetensors` (or shards + index).
        dtype: a torch dtype, or "auto": the config's `torch_dtype` off the CPU, float32 on the CPU.
        device: where the weights go; they are read straight onto it, shard by shard, so peak memory
            stays near the model's own size.
        special_ids: the special token ids; otherwise from `tokenizer` (or the tokenizer saved in the
            folder), the config's `audio_token_ids`, or the official ids for the released 158,720-token vocabulary.
        tokenizer: an already loaded tokenizer of this checkpoint.
        freeze_encoder: keep the audio encoder frozen (the recipe never trains it).
    Raises:
        CheckpointError on missing, unexpected, mis-shaped or unreadable tensors; ConfigError on a wrong config.
    """
    path = Path(path)
    config = ModelConfig.from_file(path / "config.json")
    from_tokenizer = _tokenizer_special_ids(tokenizer) if tokenizer is not None else _folder_special_ids(path)
    config.special_ids = special_ids or from_tokenizer or config.special_ids or _official_ids(config)
    dtype = resolve_dtype(dtype, config, device)
    with torch.device("meta"):
        model = AudioReasoner(config, freeze_encoder=freeze_encoder)
    _check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, tensor_shapes(path), str(path))
    for file in weight_files(path):
        with _open_weights(file, device) as f:
            shard = {key: f.get_tensor(key).to(dtype) for key in f.keys()}
        model.load_state_dict(shard, strict=False, assign=True)
    return _finish(model, freeze_encoder)


def resolve_dtype(dtype: torch.dtype | str, config: ModelConfig, device: str | torch.device) -> torch.dtype:
    """A torch dtype from a dtype or a name ("auto": the config's off the CPU, float32 on it)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if torch.device(device).type == "cpu":
            return torch.float32
        dtype = config.extra.get("torch_dtype") or config.extra.get("dtype") or "float32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _instantiate(config: ModelConfig, state: dict, *, dtype, freeze_encoder: bool, source: str) -> AudioReasoner:
    """Build the model without initialising weights, check the tensor names and shapes, and load `state`."""
    with torch.device("meta"):
        model = AudioReasoner(config, freeze_encoder=freeze_encoder)
    _check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, {k: tuple(v.shape) for k, v in state.items()}, source)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return _finish(model, freeze_encoder)


def _finish(model: AudioReasoner, freeze_encoder: bool) -> AudioReasoner:
    """Rebuild the buffers checkpoints do not hold, restore the frozen flags, and switch to eval mode."""
    model.reset_rotary()
    model.encoder.positional_embedding.requires_grad_(False)
    if freeze_encoder:
        model.encoder.requires_grad_(False)
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left unloaded: {_preview(leftover)}")
    return model.eval()


def _check_keys(expected: dict[str, tuple], state: dict[str, tuple], source: str) -> None:
    """Raise `CheckpointError` listing every difference between the model's tensors and a checkpoint's."""
    problems = key_problems(expected, state)
    if problems:
        raise CheckpointError(f"{source}: weights do not match config.json: " + "; ".join(problems))


def key_problems(expected: dict[str, tuple], state: dict[str, tuple]) -> list[str]:
    """Missing, unexpected and mis-shaped tensors (both arguments map name -> shape); empty when they match."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_preview(unexpected)}")
    shapes = [
        f"{k} is {state[k]}, expected {expected[k]}"
        for k in sorted(set(expected) & set(state))
        if state[k] != expected[k]
    ]
    if shapes:
        problems.append(f"{len(shapes)} mis-shaped tensor(s): {_preview(shapes)}")
    return problems


def check_checkpoint(path: str | Path, config: ModelConfig | None = None) -> list[str]:
    """Why `load_pretrained` would refuse a folder, read from config.json and the file headers only.

    Args:
        path: a checkpoint folder.
        config: its config when already read (else `path/config.json`).
    Returns:
        One message per problem (unreadable or absent weight files, a listed shard that is missing,
        missing/unexpected/mis-shaped tensors); empty when the weights match the config.
    """
    try:
        config = config or ModelConfig.from_file(Path(path) / "config.json")
        shapes = tensor_shapes(path)
    except (CheckpointError, ConfigError) as err:
        return [str(err)]
    with torch.device("meta"):
        model = AudioReasoner(config)
    return key_problems({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes)


def _preview(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f", ... (+{len(names) - n} more)" if len(names) > n else "")


def _folder_special_ids(path: Path) -> SpecialTokenIds | None:
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return None
    from mgrd.tokenizer import load_tokenizer

    return _tokenizer_special_ids(load_tokenizer(path))


def _official_ids(config: ModelConfig) -> SpecialTokenIds | None:
    """The released ids, for the released vocabulary only (a Qwen2.5 vocabulary of 152,064 has no audio tokens)."""
    return OFFICIAL_AUDIO_TOKEN_IDS if config.text.get("vocab_size") == RELEASED_VOCAB else None


def save_pretrained(
    model: AudioReasoner, path: str | Path, *, tokenizer=None, max_shard_bytes: int = 5 * 2**30, overwrite: bool = True
) -> Path:
    """Save in the official layout (config.json + safetensors, sharded past `max_shard_bytes`), atomically.

    Everything is written into a temporary folder beside `path` and swapped into place (`mgrd.atomic`), so a
    save that fails or is killed half-way leaves the old checkpoint as it was; the next save to the same
    path removes what a killed save left. Files get the usual permissions (0644 and 0755 under umask 022).

    Args:
        model: the model to save; its parameters' dtype is recorded as `torch_dtype`.
        path: the checkpoint folder. A file there is never replaced.
        tokenizer: saved beside the weights when given.
        max_shard_bytes: largest shard; a bigger state dict is written as shards plus the HF index.
        overwrite: replace a non-empty folder at `path` (False refuses it, as `mgrd init` does by default).
    Raises:
        TargetError: `path` is a file, or a non-empty folder and `overwrite` is False.
    """
    with atomic_folder(path, overwrite=overwrite) as tmp:
        cfg = model.config.to_dict()
        cfg["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        write_state_dict(model.state_dict(), tmp, max_shard_bytes)
        if tokenizer is not None:
            from mgrd.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)
    return Path(path)


# ------------------------------------------------------------------------------------ build from parts
# transformers Qwen2AudioEncoder name -> official encoder name (per block: `layers.{i}.` -> `blocks.{i}.`)
QWEN2_AUDIO_BLOCK_NAMES = {
    "self_attn_layer_norm": "attn_ln",
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "final_layer_norm": "mlp_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
}
QWEN2_AUDIO_TOP_NAMES = {"embed_positions": "positional_embedding", "layer_norm": "after_norm", "conv1": "conv1", "conv2": "conv2"}


def qwen2_audio_to_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Qwen2-Audio encoder's tensors (`audio_tower.*` or bare) to the official `encoder.*` names."""
    out = {}
    for key, t in state.items():
        if key.startswith(("multi_modal_projector.", "language_model.", "model.language_model.", "model.multi_modal_projector.")):
            continue
        name = key.split("audio_tower.", 1)[1] if "audio_tower." in key else key
        head, _, rest = name.partition(".")
        if head == "layers":
            idx, _, sub = rest.partition(".")
            module, _, leaf = sub.rpartition(".")
            if module not in QWEN2_AUDIO_BLOCK_NAMES:
                raise CheckpointError(f"unknown Qwen2-Audio encoder tensor: {key}")
            out[f"encoder.blocks.{idx}.{QWEN2_AUDIO_BLOCK_NAMES[module]}.{leaf}"] = t
        elif head in QWEN2_AUDIO_TOP_NAMES:
            out[f"encoder.{QWEN2_AUDIO_TOP_NAMES[head]}.{rest}"] = t
        else:
            raise CheckpointError(f"unknown Qwen2-Audio encoder tensor: {key}")
    return out


def qwen2_audio_encoder_config(cfg: dict, llm_dim: int) -> AudioEncoderConfig:
    """Our encoder sizes from a Qwen2-Audio `config.json` (its `audio_config`) or a bare encoder config."""
    a = cfg.get("audio_config", cfg)
    if a.get("encoder_ffn_dim", 4 * a["d_model"]) != 4 * a["d_model"]:
        raise ConfigError(f"encoder_ffn_dim {a['encoder_ffn_dim']} is not 4 x d_model; this encoder layout needs 4x")
    return AudioEncoderConfig(
        n_mels=a.get("num_mel_bins", 128),
        n_audio_ctx=a.get("max_source_positions", 1500),
        n_audio_state=a["d_model"],
        n_audio_head=a["encoder_attention_heads"],
        n_audio_layer=a["encoder_layers"],
        llm_dim=llm_dim,
        key_mask_rule="qwen2_audio",  # keep the attention span the encoder was trained with
    )


def build_from_parts(
    encoder_path: str | Path,
    llm_path: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    freeze_encoder: bool = True,
):
    """A new model from a Qwen2-Audio encoder checkpoint, a Qwen2.5 LLM checkpoint and a fresh adapter.

    The LLM folder's tokenizer (if any) gets the missing template and audio tokens added, and the
    embedding and `lm_head` rows grow to fit (new rows start at the mean embedding).

    Returns:
        (model, tokenizer or None). Save both with `save_pretrained(model, dir, tokenizer=tokenizer)`.
    """
    encoder_path, llm_path = Path(encoder_path), Path(llm_path)
    enc_cfg = read_json_object(encoder_path / "config.json")
    llm_cfg = read_json_object(llm_path / "config.json")
    if llm_cfg.get("model_type") != "qwen2":
        raise ConfigError(f"{llm_path}/config.json: model_type is {llm_cfg.get('model_type')!r}, expected 'qwen2'")
    if enc_cfg.get("model_type") not in ("qwen2_audio", "qwen2_audio_encoder"):
        raise ConfigError(f"{encoder_path}/config.json: model_type is {enc_cfg.get('model_type')!r}, expected a Qwen2-Audio encoder")
    text = {k: v for k, v in llm_cfg.items() if k not in ("architectures", "model_type", "transformers_version", "auto_map")}
    state = qwen2_audio_to_encoder(read_state_dict(encoder_path))
    llm_state = {k: v for k, v in read_state_dict(llm_path).items() if k.startswith(("model.", "lm_head."))}
    if "lm_head.weight" not in llm_state:  # tied embeddings: the head is the embedding matrix
        llm_state["lm_head.weight"] = llm_state["model.embed_tokens.weight"].clone()
    text["tie_word_embeddings"] = False
    state.update(llm_state)
    tokenizer = _extend_tokenizer(llm_path)
    if tokenizer is not None:
        text["vocab_size"] = max(text["vocab_size"], len(tokenizer))
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            state[key] = _grow_rows(state[key], text["vocab_size"])
    config = ModelConfig(audio=qwen2_audio_encoder_config(enc_cfg, text["hidden_size"]), text=text)
    if tokenizer is not None:
        config.special_ids = _tokenizer_special_ids(tokenizer)
    return _with_fresh_adapter(config, state, seed, dtype, freeze_encoder, tokenizer)


def _with_fresh_adapter(config, state, seed, dtype, freeze_encoder, tokenizer):
    from mgrd.models.adapter import Adapter

    a = config.audio
    torch.manual_seed(seed)
    fresh = Adapter(a.n_audio_state, a.llm_dim, a.adapter_hidden, a.kernel_size, a.adapter_stride)
    state = dict(state)
    state.update({f"adapter.{k}": v for k, v in fresh.state_dict().items()})
    model = _instantiate(config, state, dtype=dtype, freeze_encoder=freeze_encoder, source="parts")
    return model, tokenizer


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] >= rows:
        return weight
    extra = weight.float().mean(0, keepdim=True).to(weight.dtype).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0)


def _extend_tokenizer(llm_path: Path):
    if not ((llm_path / "tokenizer.json").is_file() or (llm_path / "tokenizer_config.json").is_file()):
        return None
    from mgrd.tokenizer import SPECIAL_TOKENS, load_tokenizer

    tok = load_tokenizer(llm_path)
    vocab = tok.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return tok


def _tokenizer_special_ids(tokenizer) -> SpecialTokenIds:
    from mgrd.tokenizer import special_token_ids

    return special_token_ids(tokenizer)
