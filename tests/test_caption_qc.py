"""Caption QC detectors on crafted captions, policies, and the length summary."""
from __future__ import annotations

from fusionweave.transforms.caption_qc import PUBLISHED, QcPolicy, is_repetitive, stats, summary

GOOD = ("A brown dog leaps across a sunlit lawn to catch a red frisbee in its mouth. Behind it, two tall oak "
        "trees shade a wooden bench. A white sign near the path reads \"PARK RULES\" in black capital letters.")


def test_stats_count_chars_words_sentences() -> None:
    assert stats(GOOD) == {"chars": len(GOOD), "words": 39, "sentences": 3}
    assert stats("") == {"chars": 0, "words": 0, "sentences": 0}
    assert stats("No final stop here")["sentences"] == 1


def test_a_good_caption_passes() -> None:
    assert QcPolicy().check(GOOD, "stop") == {"stats": stats(GOOD), "flags": [], "reject": None}


def test_each_failure_is_detected() -> None:
    p = QcPolicy()
    assert p.check("   ")["reject"] == "empty"
    cut = p.check(GOOD[:80], finish_reason="length")
    assert cut["flags"] == ["truncated"] and cut["reject"] is None  # flagged, kept, by default
    loop = "The dog runs on the grass. " * 5
    assert p.check(loop)["reject"] == "repetition"
    words = " ".join(["the red car is parked next to the blue car and"] * 6)
    assert is_repetitive(words) and not is_repetitive(GOOD)
    assert p.check("I'm sorry, but I can't help with identifying people in images.")["reject"] == "refusal"
    assert p.check("As an AI, I am unable to view the image.")["reject"] == "refusal"
    assert p.check(GOOD + " The dog is at [0.200, 0.400, 0.500, 0.900].")["reject"] == "leaked_boxes"
    assert p.check(GOOD + " According to the detection box, there is a tree.")["reject"] == "leaked_boxes"


def test_policy_flags_or_ignores() -> None:
    lenient = QcPolicy(refusal="flag", truncated="off")
    r = lenient.check("I'm sorry, I cannot describe this image.", finish_reason="length")
    assert r["flags"] == ["refusal"] and r["reject"] is None
    strict = QcPolicy(truncated="reject")
    assert strict.check(GOOD, "length")["reject"] == "truncated"


def test_summary_against_table_1() -> None:
    s = summary([{"chars": 1130, "words": 191, "sentences": 11}, {"chars": 565, "words": 95, "sentences": 5}])
    assert s["words"]["mean"] == 143.0 and s["words"]["vs_published"] == round(143 / 191, 3)
    assert s["published"] == PUBLISHED["1M"] == {"chars": 1130, "words": 191, "sentences": 11.0}
    assert summary([])["captions"] == 0


def test_caption_checks_are_filters_in_a_chain() -> None:
    """Failed calls and QC refusals go through the one step chain: reasons, details, statistics."""
    import pyarrow as pa

    from fusionweave.transforms.caption_qc import CaptionFailed, CaptionQc
    from fusionweave.transforms.step import REJECT_DETAIL, REJECT_REASON, REJECT_STEP, StepChain

    t = pa.table({"key": ["ok", "failed", "empty", "refusal"], "error": ["", "timeout", "", ""],
                  "caption": [GOOD, "", "", "I'm sorry, I cannot describe this image."],
                  "finish_reason": ["stop", "", "stop", "stop"]})
    kept, rejected, stats = StepChain([CaptionFailed(), CaptionQc(QcPolicy())])(t)
    assert kept.column("key").to_pylist() == ["ok"]
    got = {r["key"]: (r[REJECT_STEP], r[REJECT_REASON], r[REJECT_DETAIL]) for r in rejected.to_pylist()}
    assert got == {"failed": ("caption", "caption_failed", "timeout"), "empty": ("caption_qc", "qc_empty", ""),
                   "refusal": ("caption_qc", "qc_refusal", "I'm sorry, I cannot describe this image.")}
    assert (stats["caption"].rows_in, stats["caption"].rows_out) == (4, 3)
    assert (stats["caption_qc"].rows_in, stats["caption_qc"].rows_out) == (3, 1)
    assert dict(stats["caption_qc"].rejects) == {"qc_empty": 1, "qc_refusal": 1}
