"""AudioReasoner: encoder -> adapter -> Qwen2 decoder, the Step-Audio 2 / Step-Audio-R1 model.

Audio enters through placeholder tokens: each audio chunk becomes `<audio_start>`, N x `<audio_patch>`,
`<audio_end>` in `input_ids`, and the adapter's N output vectors overwrite the `<audio_patch>` embeddings,
chunk by chunk in reading order (row by row, left to right). The placeholder ids come from
`SpecialTokenIds` (resolved from the tokenizer or config by the loader). The forward takes and returns a
transformers KV cache, so generation does not recompute the prompt.

`forward` is the only entry point generation and training use (so an FSDP2-wrapped or compiled model works):
it encodes the chunks and places their embeddings by gathering, without a host sync. `encode_audio` is for
inspection and tests. Sampling, prompts and batching live elsewhere (`mgrd.generate`, `mgrd.data.collate`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from mgrd.models.adapter import Adapter
from mgrd.models.config import ModelConfig
from mgrd.models.encoder import AudioEncoder
from mgrd.tokenizer import SpecialTokenIds


class AudioPlaceholderError(ValueError):
    """The `<audio_patch>` runs in `input_ids` do not match the encoded audio chunks."""


@dataclass
class ReasonerOutput:
    logits: torch.Tensor  # [B, T', vocab] (T' = T, or the last `logits_to_keep` positions)
    cache: object | None  # transformers Cache when use_cache=True


class AudioReasoner(nn.Module):
    """The full audio-language model. Build it with `mgrd.models.build_model` or load a checkpoint."""

    def __init__(self, config: ModelConfig, freeze_encoder: bool = True):
        super().__init__()
        from transformers import Qwen2Model

        a = config.audio
        self.config = config
        self.encoder = AudioEncoder(
            a.n_mels, a.n_audio_ctx, a.n_audio_state, a.n_audio_head, a.n_audio_layer, a.key_mask_rule, a.token_rule
        )
        self.adapter = Adapter(a.n_audio_state, a.llm_dim, a.adapter_hidden, a.kernel_size, a.adapter_stride)
        qcfg = config.qwen2_config()
        if qcfg.hidden_size != a.llm_dim:
            raise ValueError(f"adapter width llm_dim={a.llm_dim} != text hidden_size={qcfg.hidden_size}")
        self.model = Qwen2Model(qcfg)
        self.lm_head = nn.Linear(qcfg.hidden_size, qcfg.vocab_size, bias=False)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @property
    def special_ids(self) -> SpecialTokenIds:
        ids = self.config.special_ids
        if ids is None:
            raise AudioPlaceholderError(
                "this model has no audio token ids: load it with a tokenizer, or pass special_ids"
            )
        return ids

    def reset_rotary(self) -> None:
        """Recompute the rotary frequencies in float32 on the model's device.

        They are not stored in checkpoints, `to_empty` leaves them unset and a cast to bf16 would round them.
        """
        device = self.lm_head.weight.device
        with torch.device(device):
            self.model.rotary_emb = type(self.model.rotary_emb)(config=self.model.config)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen encoder stays in eval mode
        return self

    def encode_audio(self, mels: torch.Tensor, mel_lens: torch.Tensor) -> list[torch.Tensor]:
        """Encode a batch of audio chunks.

        Args:
            mels: `[N, n_mels, T]` right-padded log-mel (see `mgrd.audio.pad_mels`).
            mel_lens: `[N]` frames per chunk.
        Returns:
            N tensors `[n_i, D_llm]`, the embeddings of each chunk's `<audio_patch>` slots.
        """
        feats, enc_lens = self._encode(mels, mel_lens)
        out, n_tokens = self.adapter(feats, enc_lens)
        return [out[i, : int(n)] for i, n in enumerate(n_tokens)]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mels: torch.Tensor | None = None,
        mel_lens: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> ReasonerOutput:
        """Logits for a batch of token sequences with audio: the one entry point for generation and training.

        The audio chunks are encoded and their embeddings placed over the `<audio_patch>` runs with tensor ops
        only (no host sync), so the forward works under FSDP2 and `torch.compile`. Outside compilation the
        placeholders are first checked against the chunks (one sync): on every call with `mels`, and on full
        sequences (`cache` None) of a model with audio ids. Decoding steps (`cache` given, no `mels`) carry only
        generated tokens, which generation never samples as audio ids, and skip the check.

        Args:
            input_ids: `[B, T]`, audio blocks expanded (`<audio_start>`, N x `<audio_patch>`, `<audio_end>`).
            attention_mask: `[B, T_cache + T]` 1 for real tokens (covering the cache too when decoding).
            mels, mel_lens: the audio chunks in reading order (row by row, left to right), `[N, n_mels, L]`
                and `[N]` (`mgrd.data.collate`).
            position_ids: `[B, T]`; needed with left padding.
            cache: a transformers Cache from a previous call; use_cache: return the updated cache.
            logits_to_keep: if > 0, only the last that many positions get logits.
        Returns:
            `ReasonerOutput` with logits `[B, T', vocab]` and the cache when `use_cache`.
        Raises:
            AudioPlaceholderError: the `<audio_patch>` runs do not match the chunks in number or length.
        """
        embeds = self.model.embed_tokens(input_ids)
        if mels is not None or (cache is None and self.config.special_ids is not None):
            embeds = self._place_audio(input_ids, embeds, mels, mel_lens)
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return ReasonerOutput(logits=self.lm_head(hidden), cache=out.cache if use_cache else None)

    def _place_audio(
        self, input_ids: torch.Tensor, embeds: torch.Tensor, mels: torch.Tensor | None, mel_lens: torch.Tensor | None
    ) -> torch.Tensor:
        """`[B, T, D]` embeddings with chunk i's audio embeddings over the i-th `<audio_patch>` run."""
        is_patch = input_ids == self.special_ids.audio_patch
        if mels is None:
            if not torch.compiler.is_compiling():
                _check_runs(_patch_runs(is_patch), [])
            return embeds
        feats, enc_lens = self._encode(mels, mel_lens)
        audio, n_tokens = self.adapter(feats, enc_lens)  # [N, P, D], [N]
        if not torch.compiler.is_compiling():
            _check_runs(_patch_runs(is_patch), n_tokens.tolist())
        chunk, offset = _run_coordinates(is_patch)
        picked = audio[chunk.clamp(0, audio.shape[0] - 1), offset.clamp(0, audio.shape[1] - 1)]  # [B, T, D]
        return torch.where(is_patch[..., None], picked.to(embeds.dtype), embeds)

    def _encode(self, mels: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features `[N, P_enc, D_enc]` and lengths `[N]`, without grad when the encoder is frozen."""
        grad = contextlib.nullcontext() if not self.freeze_encoder else torch.no_grad()
        with grad:
            return self.encoder(mels, mel_lens)


def _run_coordinates(is_patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position of `[B, T]` bool `is_patch`: which run it is in (reading order) and its offset in it.

    Tensor ops only (no host sync). Returns two `[B, T]` long tensors; values off the runs are meaningless.
    """
    before = torch.nn.functional.pad(is_patch[:, :-1], (1, 0), value=False)
    starts = (is_patch & ~before).flatten()
    flags = is_patch.flatten().long()
    chunk = starts.long().cumsum(0) - 1
    earlier = flags.cumsum(0) - flags  # patch tokens strictly before each position
    run_base = torch.where(starts, earlier, torch.zeros_like(earlier)).cummax(0).values
    return chunk.view_as(is_patch), (earlier - run_base).view_as(is_patch)


def _check_runs(runs: list[tuple[int, int, int]], n_tokens: list[int]) -> None:
    """Raise `AudioPlaceholderError` unless there is one run per chunk, each as long as its chunk encodes to."""
    if len(runs) != len(n_tokens):
        raise AudioPlaceholderError(
            f"input_ids hold {len(runs)} <audio_patch> run(s) but {len(n_tokens)} audio chunk(s) were given"
        )
    for i, ((_, _, length), n) in enumerate(zip(runs, n_tokens)):
        if length != n:
            raise AudioPlaceholderError(
                f"audio block {i} has {length} <audio_patch> tokens but its chunk encodes to {n} "
                "(see mgrd.audio.audio_token_count)"
            )


def _patch_runs(is_patch: torch.Tensor) -> list[tuple[int, int, int]]:
    """Maximal runs of True in `[B, T]`, in reading order, as (row, start, length)."""
    runs = []
    flags = is_patch.to(torch.int8)
    edge = flags.new_zeros(flags.shape[0], 1)
    edges = torch.diff(flags, dim=1, prepend=edge, append=edge)
    starts = (edges == 1).nonzero().tolist()
    ends = (edges == -1).nonzero().tolist()
    for (row, s), (_, e) in zip(starts, ends):
        runs.append((row, s, e - s))
    return runs
