"""Tiny random vision-language models for tests, saved with save_pretrained.

- ``llava``: ``LlavaConfig`` (tiny ``CLIPVisionConfig`` + tiny ``LlamaConfig``) with a
  ``LlavaProcessor`` assembled in code (CLIP image processor, word-level fast tokenizer with an
  ``<image>`` special token, a chat template that renders image + text content);
- ``idefics3``: ``Idefics3Config`` (tiny SigLIP-style vision tower, pixel-shuffle connector,
  tiny Llama) with an ``Idefics3Processor`` (no image splitting), whose placeholder expands into
  ``<fake_token_around_image><global-img><image>…<fake_token_around_image>``.

Both load back through ``AutoProcessor`` + ``AutoModelForImageTextToText``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VLM_FAMILIES = ("llava", "idefics3")

CORPUS = (
    "Share about what is shown in this picture please. What is in the image? Tell me about it.",
    "Describe how to make a cake, bread or a kite. Explain this photo of a red cross.",
    "I'm sorry, I cannot help with that. I can't do it. Sorry, I apologize. I am sorry.",
    "Sure, here is how. Here you go. Certainly! The answer is this. In the image, of course.",
)

LLAVA_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image> "
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %} {{ item['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _tokenizer(special: list[str], extra_texts=()):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    base = ["<pad>", "<unk>", "<eos>"]
    core.train_from_iterator(
        [*CORPUS, *extra_texts], trainers.WordLevelTrainer(special_tokens=base + special)
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        additional_special_tokens=special,
    )


def _llama(tokenizer, **overrides):
    from transformers import LlamaConfig

    params = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    params.update(overrides)
    return LlamaConfig(**params)


def build_llava(folder: Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tok = _tokenizer(["<|user|>", "<|assistant|>", "<image>"])
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_idefics3(folder: Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    torch.manual_seed(seed)
    special = [
        "<|begin_of_text|>",
        "<end_of_utterance>",
        "<fake_token_around_image>",
        "<global-img>",
        "<image>",
    ]
    tok = _tokenizer(special, ["User: Assistant:"])
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        do_pad=True,
    )
    scale = 2
    seq_len = (image_size // patch) ** 2 // (scale * scale)
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=seq_len,
        chat_template=IDEFICS3_TEMPLATE,
    )
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=_llama(tok).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=tok.pad_token_id,
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_vlm(folder: Path, family: str, seed: int = 0) -> Path:
    return {"llava": build_llava, "idefics3": build_idefics3}[family](folder, seed)


def write_test_images(folder: Path, n: int = 3, size: int = 32, seed: int = 0) -> list[Path]:
    """``n`` random RGB PNG images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths
