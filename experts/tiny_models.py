"""Tiny randomly initialised models written from configs, for demos and tests on machines with
no weights. Their outputs are deterministic functions of the input but carry no meaning."""
from __future__ import annotations

from pathlib import Path


def make_tiny_clip(out: str | Path, image_size: int = 64, dim: int = 32, seed: int = 0) -> Path:
    """A CLIP vision tower with projection, plus its image processor, saved under `out`."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=16, projection_dim=dim)
    out = Path(out)
    CLIPVisionModelWithProjection(cfg).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    (out / "README.md").write_text("Tiny CLIP vision model with RANDOM weights, made by fusionweave for demos "
                                   "and tests. Its embeddings carry no meaning.\n")
    return out




def make_tiny_tokenizer(out: str | Path, words: list[str]) -> Path:
    """A word-level tokenizer over `words` (lower-cased), saved as a fast tokenizer: [PAD]=0,
    [UNK]=1, [BOS]=2, the words, and [EOS] last, so it is the highest id (CLIP and OWL pool the
    text at the argmax / EOS position)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2}
    for w in words:
        for part in w.lower().replace(".", " ").split():
            vocab.setdefault(part, len(vocab))
    vocab["[EOS]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                       special_tokens=[("[BOS]", 2), ("[EOS]", vocab["[EOS]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=16, do_lower_case=True)
    fast.save_pretrained(out)
    return Path(out)


def _text_words(tags: list[str] | None) -> list[str]:
    if tags is None:
        from fusionweave.experts import vocabulary

        tags = vocabulary.load()
    return [*tags, "a photo of a"]


def _text_vision_configs(out: Path, tags: list[str] | None, image_size: int) -> tuple[dict, dict]:
    """Tiny CLIP-style text and vision tower settings, with a tokenizer for `tags` saved in `out`."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(make_tiny_tokenizer(out, _text_words(tags)))
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=len(t), max_position_embeddings=16, bos_token_id=2, eos_token_id=t.eos_token_id,
                pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=16)
    return text, vision


def make_tiny_clip_pair(out: str | Path, tags: list[str] | None = None, image_size: int = 64, seed: int = 0) -> Path:
    """A full CLIP (image and text towers) with a word-level tokenizer covering `tags`, for the
    tagger."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    out = Path(out)
    text, vision = _text_vision_configs(out, tags, image_size)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    _random_readme(out, "CLIP image-text model")
    return out


def make_tiny_owlv2(out: str | Path, tags: list[str] | None = None, image_size: int = 64, seed: int = 0) -> Path:
    """An OWLv2 open-vocabulary detector with a word-level tokenizer covering `tags`."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    torch.manual_seed(seed)
    out = Path(out)
    text, vision = _text_vision_configs(out, tags, image_size)
    Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(out)
    Owlv2ImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    _random_readme(out, "OWLv2 detector")
    return out


def make_tiny_depth(out: str | Path, image_size: int = 56, seed: int = 0) -> Path:
    """A Depth Anything depth estimator (DINOv2 backbone) with its image processor."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor
    from transformers import Dinov2Config

    torch.manual_seed(seed)
    out = Path(out)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=image_size, patch_size=14, out_indices=[1, 2, 3, 4],
                            out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                              neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(out)
    DPTImageProcessor(size={"height": image_size, "width": image_size}, keep_aspect_ratio=False,
                      ensure_multiple_of=14, do_pad=False).save_pretrained(out)
    _random_readme(out, "Depth Anything depth estimator")
    return out


def _random_readme(out: Path, what: str) -> None:
    (out / "README.md").write_text(f"Tiny {what} with RANDOM weights, made by fusionweave for demos and tests. "
                                   "Its outputs carry no meaning.\n")




CAPTION_WORDS = ("a the of and in on with near left right top bottom red green blue white black dog cat person car "
                 "tree sky grass road sign text reads large small two three building window standing sitting").split()


def make_tiny_llava(out: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """A LLaVA-style image-text-to-text model (CLIP vision tower, projector, Llama decoder) with a
    word-level tokenizer and a minimal chat template. It writes random words."""
    import torch
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    torch.manual_seed(seed)
    out = Path(out)
    make_tiny_tokenizer(out / "_tok", [*CAPTION_WORDS, "describe image detail external information"])
    tok = AutoTokenizer.from_pretrained(out / "_tok")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=16)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                      image_seq_length=(image_size // 16) ** 2, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}")
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                             crop_size={"height": image_size, "width": image_size}),
                          tokenizer=tok, patch_size=16, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
                          chat_template=template)
    proc.save_pretrained(out)
    import shutil

    shutil.rmtree(out / "_tok")
    _random_readme(out, "LLaVA-style captioner")
    return out


TINY_MODELS = {"clip": make_tiny_clip, "clip-pair": make_tiny_clip_pair, "owlv2": make_tiny_owlv2,
               "depth": make_tiny_depth, "llava": make_tiny_llava}
