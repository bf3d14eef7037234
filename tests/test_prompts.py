"""Prior-fusion prompt serialisation: golden prompts for both variants, empty sections left out,
deterministic truncation to a token budget, template errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionweave.transforms.prompts import Priors, PromptError, Template, approx_tokens, build, fit

GOLDEN = Path(__file__).parent / "golden"

EXPERTS = {
    "schema": "fusionweave.experts/1",
    "experts": {
        "tagger": {"results": [{"tag": "dog", "score": 0.9}, {"tag": "frisbee", "score": 0.7},
                               {"tag": "grass", "score": 0.4}], "error": None},
        "ocr": {"results": [{"text": "PARK RULES", "box": [0.1, 0.1, 0.3, 0.15], "score": 0.98},
                            {"text": "No dogs off leash", "box": [0.1, 0.2, 0.4, 0.25], "score": 0.81}], "error": None},
        "depth": {"results": {"larger_is_nearer": True, "objects": [
            {"label": "tree", "box": [0.7, 0.0, 1.0, 0.6], "median_depth": 0.2},
            {"label": "dog", "box": [0.2, 0.4, 0.5, 0.9], "median_depth": 0.8},
            {"label": "frisbee", "box": [0.45, 0.3, 0.55, 0.38], "median_depth": 0.6}]}, "error": None},
        "detector": {"results": None, "error": "RuntimeError: boom"},
    },
    "detections": [{"label": "dog", "box": [0.2, 0.4, 0.5, 0.9], "score": 0.93},
                   {"label": "frisbee", "box": [0.45, 0.3, 0.55, 0.38], "score": 0.61},
                   {"label": "tree", "box": [0.7, 0.0, 1.0, 0.6], "score": 0.35}],
}
ALT = "Happy dog catching a frisbee at the park"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if not path.exists():  # first run writes it; review it, then it is the contract
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("variant", ["engine", "teacher"])
def test_golden_prompts(variant: str) -> None:
    prompt = build(Template.load(variant=variant), Priors.from_experts(EXPERTS, ALT))
    check_golden(f"prompt_{variant}.txt", prompt)
    assert "Tags: dog | frisbee | grass" in prompt
    assert "dog: [0.200, 0.400, 0.500, 0.900]\nfrisbee: [0.450, 0.300, 0.550, 0.380]" in prompt
    assert "- PARK RULES\n- No dogs off leash" in prompt
    assert "World Knowledge: Happy dog catching a frisbee at the park" in prompt
    assert "Depth (near to far): dog, frisbee, tree" in prompt
    assert prompt.endswith("<image>")


def test_empty_sections_are_left_out() -> None:
    t = Template.load()
    only_alt = build(t, Priors(alt_text="a red bus"))
    assert "World Knowledge: a red bus" in only_alt
    for heading in ("Tags:", "Detection Box:", "OCR:", "Depth"):
        assert heading not in only_alt
    nothing = build(t, Priors.from_experts({"experts": {"ocr": {"results": [], "error": None}}}, "  "))
    assert "External information" not in nothing and nothing == t.instruction + "\n\n<image>"
    assert "Detection Box" not in build(t, Priors.from_experts(EXPERTS | {"detections": []}, ALT))


def test_truncation_drops_lowest_confidence_boxes_first() -> None:
    t = Template.load()
    priors = Priors.from_experts(EXPERTS, ALT)
    full = build(t, priors)
    prompt, kept = fit(t, priors, approx_tokens(full) - 1)
    assert [d["label"] for d in kept.detections] == ["dog", "frisbee"]  # tree (0.35) went first
    assert kept.notes == ("dropped 1 detections",)
    assert approx_tokens(prompt) < approx_tokens(full)
    # a tight budget: all boxes, then OCR lines lowest first, then tags, then alt-text words
    prompt, kept = fit(t, priors, approx_tokens(build(t, Priors())) + 12)
    assert not kept.detections and not kept.ocr and approx_tokens(prompt) <= approx_tokens(build(t, Priors())) + 12
    again, kept2 = fit(t, priors, approx_tokens(build(t, Priors())) + 12)
    assert (prompt, kept.notes) == (again, kept2.notes)  # deterministic
    assert fit(t, priors, None)[0] == full


def test_bad_templates_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="variant"):
        Template.load(variant="student")
    bad = tmp_path / "t.yaml"
    bad.write_text("engine:\n  instruction: hi\n  sections: ['Tags: {tagz}']\n")
    with pytest.raises(PromptError, match="exactly one of"):
        Template.load(bad)
    bad.write_text("engine: {}\n")
    with pytest.raises(PromptError, match="needs engine.instruction"):
        Template.load(bad)
    own = tmp_path / "own.yaml"
    own.write_text("engine:\n  instruction: Caption it.\n  external_header: ''\n  sections: ['Alt: {alt_text}']\n"
                   "  image: '<img>'\n")
    assert build(Template.load(own), Priors(alt_text="x")) == "Caption it.\n\nAlt: x\n\n<img>"
