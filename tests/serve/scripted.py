"""A tiny checkpoint whose weights are set so that it always writes one script: reasoning, `</think>`, an answer
of two sentences, `<|EOT|>`. Real model, real tokenizer, real server: only the weights are chosen.

Every decoder layer's output projections are zero, so the last hidden state is the (normalised) embedding of the
last token and the model is a bigram table; the script's tokens get orthogonal embeddings and `lm_head` maps each
to the next, with a margin that temperature-1 sampling cannot cross. The generation prompt's last token starts
the chain, so any prompt (audio or not) gets the script. Used where a random model cannot show a thing: the
reasoning/answer split end to end, the spoken answer, the playground page.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgrd.chat import encode_chat
from mgrd.models import build_model, save_pretrained
from mgrd.models.presets import tiny
from mgrd.tokenizer import build_tiny_tokenizer, special_token_ids

REASONING = "Two tones rising"
ANSWER = "Second higher. Up a fifth!"  # two sentences; no token of the chain may repeat (a bigram table)
SCRIPT = f"{REASONING}</think>{ANSWER}"
MARGIN = 20.0  # logit of the scripted next token over every other (after RMSNorm scales by sqrt(width))


def script_ids(tokenizer) -> list[int]:
    """The chain: the generation prompt's last token, the script's tokens, then `<|EOT|>`; all but the last distinct."""
    ids = special_token_ids(tokenizer)
    start = encode_chat(tokenizer, [{"role": "user", "content": "x"}]).input_ids[-1]
    chain = [start] + tokenizer(SCRIPT, add_special_tokens=False)["input_ids"] + [ids.eot]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError(f"the script repeats a token, so a bigram table cannot write it: {chain}")
    return chain


@torch.no_grad()
def scripted_checkpoint(out: Path) -> Path:
    """Write the scripted tiny checkpoint (official layout + tokenizer) to `out`."""
    tokenizer = build_tiny_tokenizer()
    model = build_model(tiny(len(tokenizer), special_token_ids(tokenizer)), seed=0)
    chain = script_ids(tokenizer)
    width = model.lm_head.weight.shape[1]
    if len(chain) - 1 > width:
        raise ValueError(f"a script of {len(chain)} tokens needs a model at least that wide, got {width}")
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    model.lm_head.weight.zero_()
    embed = model.model.embed_tokens.weight
    for k, (tok, nxt) in enumerate(zip(chain[:-1], chain[1:])):
        embed[tok] = 0.0
        embed[tok, k] = 1.0
        model.lm_head.weight[nxt, k] = MARGIN / width**0.5
    return save_pretrained(model, out, tokenizer=tokenizer, overwrite=True)
