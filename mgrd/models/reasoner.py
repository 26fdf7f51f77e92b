"""AudioReasoner: encoder -> adapter -> Qwen2 decoder, the Step-Audio 2 / Step-Audio-R1 model.

Audio enters through placeholder tokens: each audio chunk becomes `<audio_start>`, N x `<audio_patch>`,
`<audio_end>` in `input_ids`, and the adapter's N output vectors overwrite the `<audio_patch>` embeddings,
chunk by chunk in reading order (row by row, left to right). The placeholder ids come from
`SpecialTokenIds` (resolved from the tokenizer or config by the loader). The forward takes and returns a
transformers KV cache, so generation does not recompute the prompt.
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
        grad = contextlib.nullcontext() if not self.freeze_encoder else torch.no_grad()
        with grad:
            feats, enc_lens = self.encoder(mels, mel_lens)
        out, n_tokens = self.adapter(feats, enc_lens)
        return [out[i, : int(n)] for i, n in enumerate(n_tokens)]

    def embed(self, input_ids: torch.Tensor, audio_embeds: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings `[B, T, D]` with each chunk's audio embeddings written over its `<audio_patch>` run."""
        embeds = self.model.embed_tokens(input_ids)
        audio_embeds = audio_embeds or []
        if self.config.special_ids is None and not audio_embeds:
            return embeds  # a text-only model without audio tokens
        runs = _patch_runs(input_ids == self.special_ids.audio_patch)
        if len(runs) != len(audio_embeds):
            raise AudioPlaceholderError(
                f"input_ids hold {len(runs)} <audio_patch> run(s) but {len(audio_embeds)} audio chunk(s) were given"
            )
        for i, ((row, start, length), emb) in enumerate(zip(runs, audio_embeds)):
            if length != emb.shape[0]:
                raise AudioPlaceholderError(
                    f"audio block {i} has {length} <audio_patch> tokens but its chunk encodes to "
                    f"{emb.shape[0]} (see mgrd.audio.audio_token_count)"
                )
        if runs:
            embeds = embeds.clone()
            for (row, start, length), emb in zip(runs, audio_embeds):
                embeds[row, start : start + length] = emb.to(embeds.dtype)
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mels: torch.Tensor | None = None,
        mel_lens: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> ReasonerOutput:
        """Logits for a batch of token sequences with audio.

        Args:
            input_ids: `[B, T]`, audio blocks expanded (`<audio_start>`, N x `<audio_patch>`, `<audio_end>`).
            attention_mask: `[B, T]` 1 for real tokens (covering the cache too when decoding).
            mels, mel_lens: the audio chunks in reading order, `[N, n_mels, L]` and `[N]`.
            inputs_embeds: `[B, T, D]` instead of input_ids + audio (e.g. from `embed`, reused for K samples).
            position_ids: `[B, T]`; needed with left padding.
            cache: a transformers Cache from a previous call; use_cache: return the updated cache.
            logits_to_keep: if > 0, only the last that many positions get logits.
        """
        if inputs_embeds is None:
            audio = self.encode_audio(mels, mel_lens) if mels is not None else None
            inputs_embeds = self.embed(input_ids, audio)
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return ReasonerOutput(logits=self.lm_head(hidden), cache=out.cache if use_cache else None)


def _patch_runs(is_patch: torch.Tensor) -> list[tuple[int, int, int]]:
    """Maximal runs of True in `[B, T]`, in reading order, as (row, start, length)."""
    runs = []
    flags = is_patch.to(torch.int8)
    edges = torch.diff(flags, dim=1, prepend=flags.new_zeros(flags.shape[0], 1), append=flags.new_zeros(flags.shape[0], 1))
    starts = (edges == 1).nonzero().tolist()
    ends = (edges == -1).nonzero().tolist()
    for (row, s), (_, e) in zip(starts, ends):
        runs.append((row, s, e - s))
    return runs
