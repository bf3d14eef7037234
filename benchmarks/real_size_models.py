"""Model stages' models at their real architectures' sizes, with random weights, for benchmarks:
a random weight costs exactly what a trained one costs, while a tiny model measures only the
stage's fixed costs. Tokenizers are word-level (the benchmark's words padded to the real
vocabulary size), so embedding and output layers have their real shapes too.

    clip-b16   CLIP ViT-B/16 (DenseFusion's tagger/embedder class): vision 768 x 12 at 224 px,
               text 512 x 12, projection 512
    owlv2-base OWLv2 base/16: the same towers, at `owl_side` px (the original runs 960 px: 3,600
               patches, about a minute an image on one CPU thread)
    depth-s    Depth Anything small: DINOv2-S/14 (384 x 12) with its DPT neck, 518 px
    yolov8x    ultralytics' yolov8x.yaml, built by the detector itself (no file needed)
    llava-05b  a LLaVA of the 0.5B class: CLIP ViT-B/16 tower, 2-layer MLP projector, Qwen2-0.5B's
               decoder config (896 x 24, 14 heads / 2 KV, MLP 4864, vocabulary 151,936)
"""
from __future__ import annotations

from pathlib import Path

CLIP_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                 max_position_embeddings=77)
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)


def padded_words(words: list[str], size: int) -> list[str]:
    """`words`, then filler words up to `size` entries: the real vocabulary's embedding shape."""
    return [*words, *(f"w{i}" for i in range(max(0, size - len(words))))]


def _text(out: Path, tags: list[str]) -> dict:
    from transformers import AutoTokenizer

    from fusionweave.experts.tiny_models import _text_words, make_tiny_tokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_tokenizer(out, padded_words(_text_words(tags), 49405)))
    return {**CLIP_TEXT, "vocab_size": len(tok), "bos_token_id": 2, "eos_token_id": tok.eos_token_id, "pad_token_id": 0}


def make_clip_b16(out: Path, tags: list[str]) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=_text(out, tags), vision_config={**VIT_B16, "image_size": 224},
                         projection_dim=512)).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(out)
    return out


def make_owlv2_base(out: Path, tags: list[str], side: int) -> Path:
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

    torch.manual_seed(0)
    Owlv2ForObjectDetection(Owlv2Config(text_config={**_text(out, tags), "max_position_embeddings": 16},
                                        vision_config={**VIT_B16, "image_size": side},
                                        projection_dim=512)).save_pretrained(out)
    Owlv2ImageProcessor(size={"height": side, "width": side}).save_pretrained(out)
    return out


def make_depth_small(out: Path) -> Path:
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                            image_size=518, patch_size=14, out_indices=[9, 10, 11, 12],
                            out_features=["stage9", "stage10", "stage11", "stage12"], reshape_hidden_states=False)
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=384, patch_size=14, neck_hidden_sizes=[48, 96, 192, 384],
        fusion_hidden_size=64, head_hidden_size=32)).save_pretrained(out)
    DPTImageProcessor(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(out)
    return out


def make_llava_05b(out: Path) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, Qwen2Config)

    from fusionweave.experts.tiny_models import CAPTION_WORDS, CHAT_WORDS, LLAVA_CHAT_TEMPLATE, make_word_tokenizer

    torch.manual_seed(0)
    tok = make_word_tokenizer(padded_words([*CHAT_WORDS, *CAPTION_WORDS, "describe", "detail"], 151_936 - 5))
    text = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**VIT_B16, image_size=224), text_config=text,
                      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=196,
                      vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 224},
                                                      crop_size={"height": 224, "width": 224}),
                   tokenizer=tok, patch_size=16, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE).save_pretrained(out)
    return out
