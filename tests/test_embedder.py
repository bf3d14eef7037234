"""The embedder and its CPU preprocessor on tiny random CLIP and SigLIP towers, model
resolution, and the model-step contract run bare."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionweave.experts.base import Resources, run_locally
from fusionweave.experts.embedder import EmbedderError, ImageEmbedder, ImagePreprocessor, embedding_dim, model_type
from fusionweave.experts.resolve import ModelNotFound, resolve_model
from fusionweave.experts.tiny_models import make_tiny_clip


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (120, 90)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    img.paste((255 - color[0], 0, 0), (10, 10, 60, 50))
    img.save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "m")


def embed(model: Path, images: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
    px, errors = ImagePreprocessor(str(model))(images)
    out = run_locally(ImageEmbedder(str(model), resources=Resources(batch_size=8)),
                      [{"pixels": px, "key": np.arange(len(px))}])[0]
    assert out["key"].tolist() == list(range(len(px)))  # other columns pass through, in order
    return out["embedding"], errors


def test_clip_embeddings_are_unit_float16_and_deterministic(tiny_clip: Path) -> None:
    imgs = [jpeg((200, 30, 30)), jpeg((30, 200, 30), (300, 200)), jpeg((200, 30, 30))]
    e, errors = embed(tiny_clip, imgs)
    assert errors == [None, None, None]
    assert e.dtype == np.float16 and e.shape == (3, 32) and embedding_dim(tiny_clip) == 32
    assert np.allclose(np.linalg.norm(e.astype(np.float32), axis=1), 1, atol=2e-3)
    assert np.array_equal(e[0], e[2])  # the same image, the same vector
    again, _ = embed(tiny_clip, imgs)
    assert np.array_equal(e, again)


def test_preprocessor_rejects_undecodable_and_keeps_the_rest(tiny_clip: Path) -> None:
    px, errors = ImagePreprocessor(str(tiny_clip))([b"not an image", jpeg((1, 2, 3)), b"\xff\xd8\xff\xe0trunc"])
    assert px.shape == (1, 3, 64, 64) and px.dtype == np.uint8
    assert errors[1] is None and errors[0] and errors[2]


def test_siglip_and_full_clip_checkpoints(tmp_path: Path) -> None:
    import torch
    from transformers import (CLIPConfig, CLIPModel, CLIPImageProcessor, SiglipImageProcessor,
                              SiglipVisionConfig, SiglipVisionModel)

    torch.manual_seed(0)
    sig = tmp_path / "siglip"
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(sig)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(sig)
    assert model_type(sig) == "siglip_vision_model"
    e, _ = embed(sig, [jpeg((10, 20, 30))])
    assert e.shape == (1, 32) and embedding_dim(sig) == 32
    full = tmp_path / "clip-full"
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).save_pretrained(full)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(full)
    e, _ = embed(full, [jpeg((10, 20, 30))])
    assert e.shape == (1, 16) and embedding_dim(full) == 16


def test_checkpoint_without_projection_is_refused(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    path = tmp_path / "no-proj"
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16)
    CLIPVisionModel(cfg).save_pretrained(path)  # model_type clip_vision_model, but no visual_projection
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    with pytest.raises(EmbedderError, match="weights missing"):
        ImageEmbedder(str(path)).setup()


def test_unknown_model_type_and_missing_model(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(EmbedderError, match="model_type 'bert'"):
        model_type(tmp_path / "bert")
    with pytest.raises(ModelNotFound, match="looked in: local path .*nowhere"):
        resolve_model(tmp_path / "nowhere")
    with pytest.raises(ModelNotFound, match="Hugging Face cache"):
        resolve_model("someorg/surely-not-cached-model")
