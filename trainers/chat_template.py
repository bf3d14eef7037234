"""Chat templates for LLaVA-style conversation data, with an exact supervision mask.

Two templates, as LLaVA (haotian-liu/LLaVA, conversation.py) defines them:
- `vicuna_v1`: "SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>" (seps " " and "</s>");
  only the assistant answers (with their "</s>") are supervised.
- `plain`: "<image>" + caption + "</s>" (pre-training on captions); the caption is supervised.

Each turn's tokens are what that turn adds to the tokenisation of the conversation so far, so the
mask is exact by construction. If the tokenisation of the conversation so far is not a prefix of
the next one (a token straddles a turn boundary: the template/tokenizer drift behind LLaVA's
"tokenization mismatch ... (ignored)", which then trains the sample at loss 0), or nothing is left
to supervise after truncation, the sample raises `TemplateMismatch` with a reason the caller counts.
Growing prefixes, not separately tokenised turns, because SentencePiece tokenizers put a word
boundary marker in front of any text tokenised on its own: that would flag every turn of a Llama.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

IGNORE = -100
IMAGE = "<image>"
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP, SEP2 = " ", "</s>"
TemplateName = Literal["plain", "vicuna_v1"]


class TemplateMismatch(ValueError):
    """A sample that cannot be trained as given; `reason` is the key the caller counts."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Encoded:
    input_ids: torch.Tensor  # (n,) long; the image is one `image_token_id`
    labels: torch.Tensor  # (n,) long; IGNORE where not supervised


def segments(conversations: list[dict[str, Any]], template: TemplateName) -> list[tuple[str, bool]]:
    """The prompt as (text, supervised) pieces in order."""
    if not isinstance(conversations, list) or len(conversations) < 2:
        raise TemplateMismatch("roles", "a conversation needs a human and a gpt turn")
    turns = []
    for i, t in enumerate(conversations):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise TemplateMismatch("roles", f"turn {i} has no text value")
        want = "human" if i % 2 == 0 else "gpt"
        if t.get("from") != want:
            raise TemplateMismatch("roles", f"turn {i} is from {t.get('from')!r}, expected {want!r}")
        turns.append(t["value"])
    if len(turns) % 2:
        raise TemplateMismatch("roles", "the conversation ends with a human turn")
    if template == "plain":
        # LLaVA's preprocess_plain: the human turn is reduced to the image, the caption follows
        if len(turns) != 2:
            raise TemplateMismatch("roles", "plain wants one human turn with <image> and one caption")
        if turns[0].count(IMAGE) != 1:
            raise TemplateMismatch("no_image" if IMAGE not in turns[0] else "multi_image",
                                   f"{turns[0].count(IMAGE)} <image> in the human turn; plain wants one")
        return [(IMAGE, False), (turns[1] + SEP2, True)]
    out: list[tuple[str, bool]] = []
    head = SYSTEM + SEP
    for q, a in zip(turns[::2], turns[1::2]):
        # the space after "ASSISTANT:" belongs to the answer: tokenizers attach it to its first word
        out.append((f"{head}{ROLES['human']}: {q}{SEP}{ROLES['gpt']}:", False))
        out.append((f" {a}{SEP2}", True))
        head = ""
    return out


def prompt_for_generation(question: str, template: TemplateName) -> str:
    """The text a model continues at inference: the image and, for vicuna_v1, one user turn."""
    if template == "plain":
        return IMAGE
    q = question if IMAGE in question else f"{IMAGE}\n{question}"
    return f"{SYSTEM}{SEP}{ROLES['human']}: {q}{SEP}{ROLES['gpt']}:"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_text(text: str, tokenizer: Any, add_bos: bool = True) -> list[int]:
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    return bos + _ids(tokenizer, text)


def encode_conversation(conversations: list[dict[str, Any]], tokenizer: Any, image_token_id: int, max_length: int,
                        template: TemplateName = "vicuna_v1", add_bos: bool = True) -> Encoded:
    """Token ids and labels of one conversation with exactly one `<image>`, at most `max_length`
    long (truncated at the end). Raises TemplateMismatch (reasons: roles, no_image, multi_image,
    drift, image_token, image_truncated, no_supervised)."""
    pieces = segments(conversations, template)
    n_img = sum(t.count(IMAGE) for t, _ in pieces)
    if n_img == 0:
        raise TemplateMismatch("no_image", "no <image> in the conversation")
    if n_img > 1:
        raise TemplateMismatch("multi_image", f"{n_img} <image> placeholders; one image per sample is supported")
    ids: list[int] = []
    labels: list[int] = []
    text = ""
    for piece, supervised in pieces:
        text += piece
        now = _ids(tokenizer, text)
        if now[:len(ids)] != ids:
            raise TemplateMismatch("drift", f"tokens change across the turn boundary before {piece[:40]!r}")
        new = now[len(ids):]
        ids += new
        labels += new if supervised else [IGNORE] * len(new)
    if ids.count(image_token_id) != 1:
        raise TemplateMismatch("image_token", f"<image> did not tokenise to its one id {image_token_id}")
    if add_bos and tokenizer.bos_token_id is not None:
        ids, labels = [tokenizer.bos_token_id, *ids], [IGNORE, *labels]
    ids, labels = ids[:max_length], labels[:max_length]
    if image_token_id not in ids:
        raise TemplateMismatch("image_truncated", f"the image falls beyond max_length {max_length}")
    labels = [IGNORE if i == image_token_id else lab for i, lab in zip(ids, labels)]
    if all(lab == IGNORE for lab in labels):
        raise TemplateMismatch("no_supervised", f"no supervised token within max_length {max_length}")
    return Encoded(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))
