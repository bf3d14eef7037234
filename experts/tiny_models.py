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


def make_tiny_clip_pair(out: str | Path, tags: list[str] | None = None, image_size: int = 64, seed: int = 0,
                        projection_dim: int = 32) -> Path:
    """A full CLIP (image and text towers) with a word-level tokenizer covering `tags`, for the
    tagger (and, with `projection_dim=512`, as the text tower of a YOLO-World head)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    out = Path(out)
    text, vision = _text_vision_configs(out, tags, image_size)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).save_pretrained(out)
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


def make_tiny_eva02_clip(out: str | Path, dim: int = 64, seed: int = 0) -> Path:
    """An open_clip model config (JSON) for a small EVA02-CLIP: timm's EVA02-Tiny/14 (224 px) vision tower and a
    one-layer text tower. `backend: open_clip` builds it with random weights (torch's seed, not `seed`) from this file
    (`pretrained` empty); nothing is written but the config."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"embed_dim": dim,
           "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_tiny_patch14_224",
                          "timm_model_pretrained": False, "timm_pool": "token", "timm_proj": None},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
           "custom_text": True}
    path = out / "EVA02-Tiny-test.json"
    path.write_text(json.dumps(cfg, indent=1))
    _random_readme(out, "EVA02-CLIP open_clip config (random weights when built)")
    return path


def _random_readme(out: Path, what: str) -> None:
    (out / "README.md").write_text(f"Tiny {what} with RANDOM weights, made by fusionweave for demos and tests. "
                                   "Its outputs carry no meaning.\n")




# the image, then the text: the minimal chat template of the random LLaVAs
LLAVA_CHAT_TEMPLATE = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
                       "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}")
CAPTION_WORDS = ("a the of and in on with near left right top bottom red green blue white black dog cat person car "
                 "tree sky grass road sign text reads large small two three building window standing sitting").split()


def make_tiny_llava(out: str | Path, image_size: int = 32, seed: int = 0, words: list[str] | None = None,
                    hidden: int = 32, layers: int = 1, patch: int = 16, tie: bool = False) -> Path:
    """A LLaVA-style image-text-to-text model (CLIP vision tower, projector, Llama decoder) with a
    word-level tokenizer and a minimal chat template. It writes random words. `words`: a
    Llama-style tokenizer (`make_word_tokenizer`: <s>, </s> as EOS) over the vicuna_v1 template's
    words, the caption words and these, as the caption engine's SFT (trainers/caption_engine) wants.
    `tie`: tied input/output embeddings (a tiny model then learns to copy a prompt word quickly)."""
    import torch
    from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    torch.manual_seed(seed)
    out = Path(out)
    if words is None:
        make_tiny_tokenizer(out / "_tok", [*CAPTION_WORDS, "describe image detail external information"])
        tok = AutoTokenizer.from_pretrained(out / "_tok")
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    else:
        tok = make_word_tokenizer([*CHAT_WORDS, *CAPTION_WORDS, *words])
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch)
    text = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=tie)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                      image_seq_length=(image_size // patch) ** 2, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                             crop_size={"height": image_size, "width": image_size}),
                          tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1,  # CLIP's CLS, dropped by the "default" strategy
                          chat_template=LLAVA_CHAT_TEMPLATE)
    proc.save_pretrained(out)
    import shutil

    shutil.rmtree(out / "_tok", ignore_errors=True)
    _random_readme(out, "LLaVA-style captioner")
    return out


# the vicuna_v1 template's words (trainers/chat_template.py) and a few for questions
CHAT_WORDS = ("a chat between curious user and an artificial intelligence assistant . the gives helpful , detailed "
              "polite answers to ' s questions : what is in this image ? describe it briefly").split()


def make_word_tokenizer(words: list[str] | tuple[str, ...]) -> "object":
    """A Llama-style word-level fast tokenizer (lower-cased, punctuation split off): <unk>=0,
    <s>=1 (BOS, added in front), </s>=2 (EOS), <pad>=3, <image>=4, then `words`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in words:
        for part in pre_tokenizers.Whitespace().pre_tokenize_str(w.lower()):
            vocab.setdefault(part[0], len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=["<image>"], model_max_length=4096)


def make_tiny_llm(out: str | Path, words: list[str] | None = None, layers: int = 2, seed: int = 0,
                  init_range: float = 0.02, intermediate: int = 128) -> Path:
    """A Llama causal LM (hidden 64, 4 heads, `layers` layers) with a word-level tokenizer over
    the chat template's words, the caption words and `words`, both saved under `out`. A frozen one
    that soft prompts must steer needs a wider `init_range` (0.02 gives logits within about +-1)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    out = Path(out)
    tok = make_word_tokenizer([*CHAT_WORDS, *CAPTION_WORDS, *(words or [])])
    cfg = LlamaConfig(hidden_size=64, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False, initializer_range=init_range)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    _random_readme(out, "Llama causal LM")
    return out


def make_tiny_vision_teacher(out: str | Path, image_size: int = 32, patch: int = 4, seed: int = 0) -> Path:
    """A CLIP vision tower (image 32, patch 4, hidden 32: an 8x8 patch grid) with its image
    processor: the frozen teacher of EVE's patch aligning layer."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    out = Path(out)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                           image_size=image_size, patch_size=patch)
    CLIPVisionModel(cfg).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    _random_readme(out, "CLIP vision tower")
    return out


# the synthetic matching captions' words (trainers/matching/data.py), so a tiny BERT reads them whole
MATCHING_WORDS = ("a an the there is at in with and holds image part corner red green blue yellow purple orange "
                  "circle square triangle top middle bottom left centre right").split()


def make_tiny_bert(out: str | Path, words: list[str] | None = None, layers: int = 4, hidden: int = 64,
                   seed: int = 0) -> Path:
    """A BERT encoder (hidden 64, 4 heads, `layers` layers) with a WordPiece tokenizer whose vocabulary is
    whole words (the caption and matching words, and `words`): the text backbone of UniPT/SHERL tests."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for w in [*CAPTION_WORDS, *MATCHING_WORDS, *(words or [])]:
        if w.lower() not in vocab:
            vocab.append(w.lower())
    # a vocab dict: transformers 5's BertTokenizerFast ignores a vocab_file argument (every word [UNK])
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=64)
    tok.save_pretrained(out)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=2 * hidden, max_position_embeddings=64, pad_token_id=0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(out)
    _random_readme(out, "BERT text encoder")
    return out


def make_tiny_resnet(out: str | Path, seed: int = 0) -> Path:
    """A transformers ResNet (basic blocks, 3 stages of 16/32/64 channels, depths 1/1/2, stride 16):
    the image backbone of UniPT/SHERL tests; its last stage has two blocks, as SHERL needs."""
    import torch
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    out = Path(out)
    cfg = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 2],
                       layer_type="basic", downsample_in_first_stage=False)
    ResNetModel(cfg).save_pretrained(out)
    _random_readme(out, "ResNet image encoder")
    return out


def make_tiny_llava_chat(out: str | Path, seed: int = 0) -> Path:
    """A tiny LLaVA a caption engine can be fine-tuned from (`fusionweave train caption-engine`):
    a Llama-style tokenizer (</s> as EOS, as vicuna_v1 wants) that knows the shipped densefusion
    prompts' words, so the fusion prompt tokenises to words rather than unknowns."""
    from fusionweave.transforms.prompts import DEFAULT_TEMPLATE, VARIANTS, Template

    words = [x for v in VARIANTS for t in [Template.load(DEFAULT_TEMPLATE, v)]
             for x in (t.instruction, t.external_header, *t.sections)]
    return make_tiny_llava(out, seed=seed, words=words, hidden=64, layers=2, patch=16)


def make_tiny_encoder(out: str | Path, modality: str = "image", seed: int = 0) -> Path:
    """A frozen modality encoder for `train pathweave` on CPU, width 32: a CLIP vision tower (image 32,
    patch 8) for images and video frames, the same with 4 input channels for RGB-D, an AST over
    512x128 fbank chunks (8x8 patches), or the PointNet-style point encoder."""
    import torch
    from transformers import ASTConfig, ASTModel, CLIPVisionConfig, CLIPVisionModel

    from fusionweave.experts.point_encoder import PointEncoder

    torch.manual_seed(seed)
    out = Path(out)
    if modality == "pointcloud":
        enc = PointEncoder(dim=32)
        with torch.no_grad():  # default init: shapes differ by ~0.06 of a token's spread; scaled, by ~0.3
            enc.mlp[0].weight.mul_(3.0)
            enc.mlp[2].weight.mul_(5.0)
        enc.save(out)
    elif modality == "audio":
        model = ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   patch_size=16, frequency_stride=16, time_stride=64, max_length=512,
                                   num_mel_bins=128))
        with torch.no_grad():  # see below: where a patch is (its frequency) must survive
            model.get_submodule("embeddings").position_embeddings.normal_(0.0, 1.0)
        model.save_pretrained(out)
    else:
        model = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=32, patch_size=8,
                                                 num_channels=4 if modality == "depth" else 3))
        # random position embeddings of the usual 0.02 scale drown under the patch content, and then
        # nothing downstream can tell where a patch is (motion, quadrants); a trained tower knows
        with torch.no_grad():
            model.get_submodule("embeddings").position_embedding.weight.normal_(0.0, 1.0)
        model.save_pretrained(out)
    _random_readme(out, f"{modality} encoder")
    return out


def _encoder_maker(modality: str) -> "object":
    return lambda out, seed=0: make_tiny_encoder(out, modality, seed)


TINY_MODELS = {"clip": make_tiny_clip, "clip-pair": make_tiny_clip_pair, "owlv2": make_tiny_owlv2,
               "depth": make_tiny_depth, "llava": make_tiny_llava, "eva02-clip": make_tiny_eva02_clip,
               "llm": make_tiny_llm, "vision-teacher": make_tiny_vision_teacher,
               "bert": make_tiny_bert, "resnet": make_tiny_resnet, "llava-chat": make_tiny_llava_chat}
TINY_MODELS.update({f"{m}-encoder": _encoder_maker(m) for m in ("image", "video", "audio", "depth", "pointcloud")})
