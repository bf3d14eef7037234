"""Captioners: the transformers captioner on a tiny random LLaVA-style model, the openai
captioner against a real chat-completions server on 127.0.0.1 backed by that model (cache hits
on rerun, retries on 429/500, timeouts, malformed responses), and the priors template."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.captioners import PriorsTemplateCaptioner, TransformersCaptioner
from fusionweave.experts.openai_captioner import OpenAICaptioner, RequestCache
from tests.chat_server import ChatServer


def jpeg(c: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), c).save(buf, "JPEG")
    return buf.getvalue()


def batch(images: list[bytes], prompts: list[str] | None = None) -> Batch:
    n = len(images)
    return {"key": np.array([f"k{i}" for i in range(n)], dtype=object), "image": np.array(images, dtype=object),
            "prompt": np.array(prompts or [f"describe image {i}" for i in range(n)], dtype=object),
            "priors": np.array(["{}"] * n, dtype=object)}


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fusionweave.experts.tiny_models import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("llava") / "m")


@pytest.fixture(scope="module")
def server(llava: Path):
    with ChatServer(str(llava), max_new_tokens=12) as srv:
        yield srv


def test_transformers_captioner_batches_and_isolates(llava: Path) -> None:
    cap = TransformersCaptioner(str(llava), max_new_tokens=10)
    cap.setup()
    try:
        b = cap.process(batch([jpeg((200, 0, 0)), b"not an image", jpeg((0, 0, 200))]))
        assert b["caption_error"][1].startswith("UnidentifiedImageError") and b["caption"][1] == ""
        for i in (0, 2):
            assert b["caption_error"][i] == "" and b["caption"][i] and b["finish_reason"][i] in ("stop", "length")
        alone = cap.process(batch([jpeg((200, 0, 0))]))
        assert alone["caption"][0] == b["caption"][0]  # greedy: batching does not change a caption
    finally:
        cap.teardown()


def make(server: ChatServer, tmp_path: Path, **kw: object) -> OpenAICaptioner:
    c = OpenAICaptioner(server.base_url, "tiny-llava", tmp_path / "cache.sqlite", Resources(), backoff=0.01,
                        **{"concurrency": 4, "max_tokens": 12, **kw})
    c.setup()
    return c


def test_openai_captioner_end_to_end_and_cache(server: ChatServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FW_TEST_KEY", "sk-secret-value")
    c = make(server, tmp_path, api_key_env="FW_TEST_KEY")
    imgs = [jpeg((i * 40, 10, 10)) for i in range(5)]
    before = server.served
    out = c.process(batch(imgs))
    assert list(out["caption_error"]) == [""] * 5 and all(out["caption"])
    assert server.served - before == 5
    assert server.headers_seen[-1]["Authorization"] == "Bearer sk-secret-value"
    assert "sk-secret" not in json.dumps(c.info())
    c.teardown()
    again = make(server, tmp_path, api_key_env="FW_TEST_KEY")  # a rerun: a new worker, the same cache file
    out2 = again.process(batch(imgs))
    assert server.served - before == 5 and again.stats["cache_hits"] == 5  # nothing paid twice
    assert list(out2["caption"]) == list(out["caption"])
    assert len(RequestCache(tmp_path / "cache.sqlite")) == 5
    other = again.process(batch(imgs[:1], ["another prompt"]))  # another prompt is another request
    assert server.served - before == 6 and other["caption_error"][0] == ""
    again.teardown()


def test_openai_retries_timeouts_and_malformed(server: ChatServer, tmp_path: Path) -> None:
    c = make(server, tmp_path, concurrency=1, retries=2, timeout=1.0)
    server.plan = ["429", "500"]
    out = c.process(batch([jpeg((1, 2, 3))]))
    assert out["caption_error"][0] == "" and out["caption"][0] and c.stats["retries"] == 2
    server.plan = ["500", "500", "500"]
    out = c.process(batch([jpeg((4, 5, 6))]))
    assert out["caption_error"][0].startswith("CaptionRequestError: HTTP 500") and "3 attempts" in out["caption_error"][0]
    server.plan = ["sleep:2", "sleep:2", "sleep:2"]
    out = c.process(batch([jpeg((7, 8, 9))]))
    assert "timeout after 1.0s" in out["caption_error"][0]
    server.plan = ["malformed"]
    out = c.process(batch([jpeg((10, 11, 12))]))
    assert "malformed response" in out["caption_error"][0] and out["caption"][0] == ""
    server.plan = []
    out = c.process(batch([jpeg((10, 11, 12))]))  # failures are not cached: the next run asks again
    assert out["caption_error"][0] == ""
    c.teardown()


def test_priors_template_is_labelled_and_deterministic() -> None:
    priors = {"alt_text": "dog in a park", "tags": [["dog", 0.9], ["grass", 0.5]],
              "detections": [{"label": "dog", "box": [0, 0, 1, 1], "score": 0.9},
                             {"label": "dog", "box": [0, 0, 0.5, 0.5], "score": 0.5}],
              "ocr": [["PARK", 0.99]], "depth": [["tree", 0.1], ["dog", 0.9]]}
    b = batch([b"x"])
    b["priors"] = np.array([json.dumps(priors)], dtype=object)
    out = PriorsTemplateCaptioner().process(b)
    text = out["caption"][0]
    assert text.startswith(PriorsTemplateCaptioner.MARKER)
    assert "dog in a park" in text and "dog and grass" in text and "2 dog" in text and '"PARK"' in text
    assert "Nearest to the camera: dog." in text
    assert PriorsTemplateCaptioner().info()["model"] == "priors-template"
