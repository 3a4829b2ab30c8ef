"""Supervised fine-tuning on responses only: the loop the built-in demo models are trained with.

Each example is a chat-formatted prompt followed by the response tokens; the loss covers the
response tokens only (prompt and padding are labelled -100), as in a safety fine-tune.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def demo_llama_config(tokenizer):
    """The built-in demos' language model: a 2-layer, 64-wide Llama over ``tokenizer``'s words
    (the text demo's whole model, the vision demo's text model)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def train_on_responses(
    model,
    rows: Sequence[Sequence[int]],
    response_masks: Sequence[Sequence[int]],
    pad_id: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    per_example: dict[str, torch.Tensor] | None = None,
) -> float:
    """Train ``model`` in place for ``steps`` AdamW steps on random batches; the last loss.

    ``response_masks[i][t]`` is 1 where token t of row i is part of the response.
    ``per_example`` holds extra model inputs with one entry per row (e.g. ``pixel_values``).
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, response_masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        labels[i, : len(row)] = torch.where(torch.tensor(mask) == 1, torch.tensor(row), -100)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        pick = torch.randint(0, len(rows), (batch_size,), generator=generator)
        extra = {name: values[pick] for name, values in (per_example or {}).items()}
        loss = model(
            input_ids=ids[pick], attention_mask=attention[pick], labels=labels[pick], **extra
        ).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return loss.item()
