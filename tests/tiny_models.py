"""Tiny chat models for tests: a random Llama + a tokenizer trained in code, saved to a folder.

Each tokenizer family mirrors a real one, with its own chat template:

- ``byte_bpe``: byte-level BPE (GPT-2 / SmolLM2 style), ChatML template ``<|im_start|>user\\n…``;
- ``sp_unigram``: SentencePiece style (Metaspace ``▁`` pre-tokenizer + Unigram), Llama-2
  template ``<s>[INST] … [/INST]`` whose ``[INST]`` markers are plain text, not special tokens;
- ``sp_bpe``: SentencePiece style with BPE and byte fallback (what Llama-2 really ships);
- ``wordpiece``: BERT style (normaliser lower-cases and strips accents, ``##`` continuations),
  wrapped as a fast tokenizer, template ``[CLS]user: …[SEP]assistant:``.

``build_tiny_model`` saves model + tokenizer with ``save_pretrained`` so tests load them back
through ``Subject.load(folder)``, the real loading path. ``train_tiny_chat_model`` trains one on
(prompt, response) pairs, for tests that need a model that actually answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("byte_bpe", "sp_unigram", "sp_bpe", "wordpiece")

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "[INST] {{ message['content'] }} [/INST]{% else %} {{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)
BERT_TEMPLATE = (
    "[CLS]{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}[SEP]"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)

# Enough English for the trainers to learn sub-words, plus the margin openings' words.
BASE_CORPUS = (
    "Share how to make a cake, please.",
    "What is the best way to bake bread at home?",
    "Please explain how to build a kite for my kids.",
    "I'm sorry, I cannot help with that. I can't do it. Sorry, I apologize. I am sorry.",
    "Sure, here is how. Here you go. Certainly! The answer is this. In the image, of course.",
    "As an AI assistant, I must decline this request. Okay! Here are the steps.",
    "Tell me how to write a poem about the sea and the sky.",
    "Can you describe the history of the café in Zürich? It's a naïve question.",
    "The quick brown fox jumps over the lazy dog 123 times; don't worry, it's fine!",
    "user assistant system instruction request answer question steps",
    "[INST] user: [/INST] assistant: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024",
)


@dataclass(frozen=True)
class Family:
    """How one tokenizer family is built: special tokens and its chat template."""

    name: str
    template: str
    special: dict[str, str]
    extra_special: tuple[str, ...] = ()


def _family(name: str) -> Family:
    if name == "byte_bpe":
        return Family(
            name,
            CHATML_TEMPLATE,
            {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": "<|im_start|>"},
            ("<|im_start|>", "<|im_end|>"),
        )
    if name in ("sp_unigram", "sp_bpe"):
        return Family(
            name,
            LLAMA2_TEMPLATE,
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        )
    if name == "wordpiece":
        return Family(
            name,
            BERT_TEMPLATE,
            {
                "unk_token": "[UNK]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "mask_token": "[MASK]",
                "eos_token": "[SEP]",
            },
        )
    raise ValueError(f"unknown tokenizer family {name!r}; known: {', '.join(FAMILIES)}")


def build_tokenizer(
    family: str, corpus: Iterable[str] = (), *, vocab_size: int = 400, chat_template: bool = True
):
    """A fast tokenizer of ``family`` trained in code on BASE_CORPUS + ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = _family(family)
    texts = list(BASE_CORPUS) + list(corpus)
    special = list(dict.fromkeys([*spec.special.values(), *spec.extra_special]))
    if family == "byte_bpe":
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif family == "sp_unigram":
        core = Tokenizer(models.Unigram())
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special, unk_token="<unk>", show_progress=False
        )
    elif family == "sp_bpe":
        core = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        core.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size + 256,
            special_tokens=special + byte_tokens,
            show_progress=False,
        )
    else:  # wordpiece
        core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        core.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
        core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        core.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            continuing_subword_prefix="##",
            show_progress=False,
        )
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        additional_special_tokens=list(spec.extra_special) or None,
        **spec.special,
    )
    if chat_template:
        tokenizer.chat_template = spec.template
    return tokenizer


def tiny_llama(
    tokenizer, *, hidden_size: int = 32, layers: int = 2, max_positions: int = 512, seed: int = 0
):
    """A randomly initialised LlamaForCausalLM sized for ``tokenizer`` (deterministic for seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny_model(
    folder: str | Path,
    family: str,
    *,
    chat_template: bool = True,
    hidden_size: int = 32,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Save a random tiny Llama + a ``family`` tokenizer to ``folder`` with save_pretrained."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family, chat_template=chat_template)
    model = tiny_llama(tokenizer, hidden_size=hidden_size, max_positions=max_positions, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_tiny_chat_model(
    folder: str | Path,
    pairs: Sequence[tuple[str, str]],
    *,
    family: str = "byte_bpe",
    hidden_size: int = 64,
    steps: int = 200,
    batch: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    vocab_size: int = 600,
) -> Path:
    """Train a tiny Llama to answer each prompt with its response; save it to ``folder``.

    Loss on the response tokens (+ end-of-turn) only, like a chat fine-tune.
    """
    from probe.demos.training import train_on_responses

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family, [t for p in pairs for t in p], vocab_size=vocab_size)
    model = tiny_llama(tokenizer, hidden_size=hidden_size, max_positions=256, seed=seed)
    rows, masks = [], []
    for prompt, response in pairs:
        context = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        resp = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(ctx + resp)
        masks.append([0] * len(ctx) + [1] * len(resp))
    loss = train_on_responses(
        model, rows, masks, tokenizer.pad_token_id, steps=steps, batch_size=batch, lr=lr, seed=seed
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "final_loss.txt").write_text(f"{loss:.4f}\n", encoding="utf-8")
    return folder


# --------------------------------------------------------------------- alignment assertions
def rel_spans(subject, enc) -> tuple[list[tuple[int, int]], int]:
    """Token spans relative to the prompt's start, and that start in the chat text."""
    offsets = subject.tokenizer(enc.text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    prompt = enc.query.text
    start = subject._prompt_start(enc.text, prompt)
    assert enc.text[start : start + len(prompt)] == prompt
    return [(a - start, b - start) for a, b in offsets], start


def overlapping_words(enc, span: tuple[int, int]) -> set[int]:
    """Indices of the prompt words that a (prompt-relative) token span overlaps."""
    a, b = span
    return {i for i, w in enumerate(enc.words) if min(b, w.end) > max(a, w.start)}


def check_alignment(subject, prompt: str, *, strict_ownership: bool = False) -> None:
    """Every rule that token_word must obey, for any prompt and tokenizer.

    - a token outside the prompt (chat template) or a template special token maps to -1;
    - a token that overlaps prompt words maps to one of them; one that overlaps none
      (whitespace) maps to -1;
    - every word is overlapped by at least one token; with ``strict_ownership`` every word
      also owns one (false only when one token spans two words, e.g. SentencePiece "▁cake,").
    """
    from probe.words import split_words

    enc = subject.encode(prompt)
    assert list(enc.words) == split_words(prompt)
    spans, _ = rel_spans(subject, enc)
    assert len(spans) == len(enc.input_ids) == len(enc.token_word)
    # template specials; <unk> stands for characters of the prompt and may belong to a word
    specials = set(subject.tokenizer.all_special_ids) - {subject.tokenizer.unk_token_id}
    for tid, owner, span in zip(enc.input_ids, enc.token_word, spans, strict=True):
        overlapping = overlapping_words(enc, span)
        if tid in specials or span[1] <= 0 or span[0] >= len(prompt):
            assert owner == -1, (prompt, span, owner)
        if overlapping:
            assert owner in overlapping, (prompt, span, owner, overlapping)
        else:
            assert owner == -1, (prompt, span, owner)
    for index, word in enumerate(enc.words):
        covering = [s for s in spans if index in overlapping_words(enc, s)]
        assert covering, f"word {word.text!r} of {prompt!r} is covered by no token"
        if strict_ownership:
            assert index in enc.token_word, f"word {word.text!r} of {prompt!r} owns no token"
