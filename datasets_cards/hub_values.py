"""Values the Hugging Face Hub accepts in dataset card metadata (checked offline; the Hub's own
validator is called as well when publishing)."""
from __future__ import annotations

SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T"),
]
TASK_CATEGORIES = {
    "image-to-text", "text-to-image", "image-classification", "object-detection", "image-segmentation",
    "depth-estimation", "visual-question-answering", "question-answering", "image-text-to-text",
    "zero-shot-image-classification", "video-classification", "audio-classification", "text-to-audio",
    "automatic-speech-recognition", "feature-extraction", "text-generation", "text-classification",
    "video-text-to-text", "image-feature-extraction", "visual-document-retrieval", "other",
}
LICENSES = {
    "apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0",
    "cc0-1.0", "odc-by", "odbl", "pddl", "openrail", "other", "unknown", "cc-by-3.0", "cc-by-2.0", "gpl-3.0",
    "bsd-3-clause", "llama2", "llama3",
}


def size_category(n: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1T"


def check(meta: dict) -> list[str]:
    """Problems with card metadata, by field."""
    problems = []
    lic = meta.get("license")
    if lic not in LICENSES:
        problems.append(f"license: {lic!r} is not a Hub license id (e.g. {sorted(LICENSES)[:6]}...)")
    for t in meta.get("task_categories", []):
        if t not in TASK_CATEGORIES:
            problems.append(f"task_categories: {t!r} is not a Hub task category")
    for s in meta.get("size_categories", []):
        if s not in {name for _, name in SIZE_CATEGORIES} | {"n>1T"}:
            problems.append(f"size_categories: {s!r} is not a Hub size category")
    langs = meta.get("language", [])
    if any(not isinstance(x, str) or not (2 <= len(x) <= 3 or "-" in x) for x in langs):
        problems.append(f"language: {langs!r} must be ISO 639 codes")
    for c in meta.get("configs", []):
        if not c.get("data_files"):
            problems.append(f"configs: {c.get('config_name')!r} has no data_files")
    return problems
