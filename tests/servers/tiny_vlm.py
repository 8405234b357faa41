"""Tiny random-weight vision-language models built at test time, fully offline.

They exercise the ``transformers`` backend's code path (processor, chat template,
batched generate, decoding) — they prove nothing about annotation quality: their
answers are random tokens. A byte-level BPE tokenizer is trained on the spot with
``tokenizers``; LLaVA (CLIP vision + Llama) and Idefics3 (SigLIP-style vision +
Llama) configurations are saved with ``save_pretrained`` (< 1 MB each).
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
    "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
IDEFICS_TEMPLATE = CHAT_TEMPLATE.replace("<image>", "<image>")


def _tokenizer(extra_special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = ["subject", "attribute", "relation", "caption", "red", "blue", "scarf", "jacket",
             "hands", "holds", "wears", "person", "left", "right", "json", "answer", "step",
             "single", "groups", "relations", "image", "frame"]
    corpus = [" ".join(words[(i * 7 + j) % len(words)] for j in range(8)) + " {S1} [A2] 0.5"
              for i in range(2000)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", *extra_special]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=extra_special)


def build_llava(path: Path) -> Path:
    """A 2-layer CLIP vision tower + 2-layer Llama, image 64 px, patch 16."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _tokenizer(["<image>"])
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=64, patch_size=16,
                              projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_id,
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg)
    image_proc = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64,
                                                                           "width": 64})
    proc = LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=16,
                          vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=1)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def build_idefics3(path: Path) -> Path:
    """A tiny Idefics3 (the SmolVLM architecture): vision 2 layers, Llama 2 layers."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    specials = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    specials += [f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5)]
    tok = _tokenizer(specials)
    cfg = Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id, "max_position_embeddings": 4096},
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
        pad_token_id=tok.pad_token_id)
    model = Idefics3ForConditionalGeneration(cfg)
    image_proc = Idefics3ImageProcessor(size={"longest_edge": 128},
                                        max_image_size={"longest_edge": 64})
    proc = Idefics3Processor(image_processor=image_proc, tokenizer=tok, image_seq_len=4,
                             chat_template=IDEFICS_TEMPLATE)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path
