"""The chat templates: only assistant tokens are supervised, a tokenizer that drifts across turn
boundaries or a truncation that leaves nothing to learn is a counted TemplateMismatch."""
from __future__ import annotations

import pytest

from fusionweave.experts.tiny_models import CAPTION_WORDS, CHAT_WORDS, make_word_tokenizer
from fusionweave.trainers.chat_template import (IGNORE, SYSTEM, TemplateMismatch, encode_conversation,
                                                prompt_for_generation, segments)


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer([*CHAT_WORDS, *CAPTION_WORDS])


def turns(*values: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def supervised(tok, enc) -> list[str]:
    return tok.convert_ids_to_tokens([int(i) for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])


def test_vicuna_supervises_only_the_answers(tok) -> None:
    image = tok.convert_tokens_to_ids("<image>")
    conv = turns("<image>\nwhat is in this image?", "a red dog", "describe it", "two cat near the tree")
    enc = encode_conversation(conv, tok, image, 512, "vicuna_v1")
    assert supervised(tok, enc) == ["a", "red", "dog", "</s>", "two", "cat", "near", "the", "tree", "</s>"]
    assert enc.input_ids[0] == tok.bos_token_id and (enc.input_ids == image).sum() == 1
    assert (enc.labels[enc.input_ids == image] == IGNORE).all()
    # the whole prompt, tokenised at once, is the same token sequence
    text = "".join(t for t, _ in segments(conv, "vicuna_v1"))
    assert text.startswith(SYSTEM + " USER: <image>\nwhat") and text.endswith("ASSISTANT: two cat near the tree</s>")
    assert enc.input_ids.tolist() == [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
    assert prompt_for_generation("what is in this image?", "vicuna_v1") == text.split(" a red dog")[0]


def test_plain_supervises_the_caption(tok) -> None:
    image = tok.convert_tokens_to_ids("<image>")
    enc = encode_conversation(turns("<image>", "a blue car on the road"), tok, image, 64, "plain")
    assert tok.convert_ids_to_tokens(enc.input_ids.tolist()) == ["<s>", "<image>", "a", "blue", "car", "on", "the",
                                                                  "road", "</s>"]
    assert supervised(tok, enc) == ["a", "blue", "car", "on", "the", "road", "</s>"]


def test_drifting_tokenizer_is_a_mismatch_not_a_silent_zero_loss(tok) -> None:
    drifting = make_word_tokenizer([*CHAT_WORDS, *CAPTION_WORDS])
    drifting.add_tokens([": a"])  # a merge across the "ASSISTANT:" / answer boundary, as new BPE vocabularies make
    image = drifting.convert_tokens_to_ids("<image>")
    conv = turns("<image>\nwhat is in this image?", "red dog", "describe it", "a cat")
    with pytest.raises(TemplateMismatch) as err:
        encode_conversation(conv, drifting, image, 512, "vicuna_v1")
    assert err.value.reason == "drift"
    # answers that do not start with "a" never meet the merge: exact again
    assert supervised(drifting, encode_conversation(conv[:2], drifting, image, 512, "vicuna_v1")) == [
        "red", "dog", "</s>"]


@pytest.mark.parametrize("conv,max_length,reason", [
    (turns("<image>\nwhat is in this image?", "a red dog"), 40, "no_supervised"),  # truncated before the answer
    (turns("<image>\nwhat is in this image?", "a red dog"), 10, "image_truncated"),
    (turns("what is in this image?", "a red dog"), 512, "no_image"),
    (turns("<image> <image>", "a red dog"), 512, "multi_image"),
    ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "<image>"}], 512, "roles"),
    (turns("<image>", "a", "b"), 512, "roles"),
])
def test_untrainable_samples_raise_their_reason(tok, conv, max_length, reason) -> None:
    with pytest.raises(TemplateMismatch) as err:
        encode_conversation(conv, tok, tok.convert_tokens_to_ids("<image>"), max_length, "vicuna_v1")
    assert err.value.reason == reason


def test_missing_image_token_is_reported() -> None:
    from fusionweave.trainers.eve.model import image_token_id

    tok = make_word_tokenizer(CHAT_WORDS)
    tok_without = make_word_tokenizer(CHAT_WORDS)
    assert image_token_id(tok) == tok.convert_tokens_to_ids("<image>")
    with pytest.raises(TemplateMismatch) as err:  # an id that is not what <image> tokenises to
        encode_conversation(turns("<image>", "a"), tok_without, 999, 64, "plain")
    assert err.value.reason == "image_token"
