"""BLEU-4, ROUGE-L and CIDEr(-D) of candidate captions against references, as the COCO caption
evaluation (pycocoevalcap) computes them. pycocoevalcap's scorers are used when it is installed;
otherwise these definitions, written to match its code path for path:
- BLEU: corpus BLEU over all captions, clipped n-gram counts, "closest" reference length for the
  brevity penalty, smoothing constants 1e-9 / 1e-15 (bleu_scorer.py);
- ROUGE-L: LCS F-measure with beta 1.2, the best precision and recall over the references,
  averaged over captions (rouge.py);
- CIDEr-D: TF-IDF n-gram vectors (n = 1..4) with document frequencies from the references,
  clipped candidate counts, a Gaussian length penalty (sigma 6) on the bigram counts, x10,
  averaged over captions (cider_scorer.py).
Both paths get the same tokenisation: lower case, punctuation removed (PTBTokenizer's output
minus its Java tokenizer; METEOR and SPICE, which also need Java, are left out).
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", re.I)
_PUNCT = set("''`-.?!,:;\"()[]{}")


def tokenize(text: str) -> str:
    return " ".join(t for t in _TOKEN.findall(text.lower()) if t not in _PUNCT)


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu(refs: list[list[str]], cands: list[str], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (pycocoevalcap BleuScorer, option 'closest')."""
    tiny, small = 1e-15, 1e-9
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for rs, c in zip(refs, cands):
        words = c.split()
        lens = [len(r.split()) for r in rs]
        max_counts: dict[tuple, int] = {}
        for r in rs:
            for g, k in ngrams(r.split(), n).items():
                max_counts[g] = max(max_counts.get(g, 0), k)
        test_len += len(words)
        ref_len += min((abs(L - len(words)), L) for L in lens)[1]
        for g, k in ngrams(words, n).items():
            correct[len(g) - 1] += min(max_counts.get(g, 0), k)
        for k in range(n):
            guess[k] += max(0, len(words) - k)
    out, acc = [], 1.0
    for k in range(n):
        acc *= (correct[k] + tiny) / (guess[k] + small)
        out.append(acc ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: list[list[str]], cands: list[str], beta: float = 1.2) -> float:
    scores = []
    for rs, c in zip(refs, cands):
        cw = c.split()
        precs, recs = [], []
        for r in rs:
            rw = r.split()
            lcs = _lcs(rw, cw)
            precs.append(lcs / len(cw) if cw else 0.0)
            recs.append(lcs / len(rw) if rw else 0.0)
        p, r = max(precs), max(recs)
        scores.append((1 + beta ** 2) * p * r / (r + beta ** 2 * p) if p and r else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def cider_d(refs: list[list[str]], cands: list[str], n: int = 4, sigma: float = 6.0) -> float:
    df: Counter = Counter()
    for rs in refs:
        df.update({g for r in rs for g in ngrams(r.split(), n)})
    log_n = math.log(float(len(refs)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        v: list[dict] = [defaultdict(float) for _ in range(n)]
        norm, length = [0.0] * n, 0
        for g, tf in counts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (log_n - math.log(max(1.0, df[g])))
            norm[k] += v[k][g] ** 2
            if k == 1:  # pycocoevalcap measures length in bigrams
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    def sim(vh: list[dict], vr: list[dict], nh: list[float], nr: list[float], lh: int, lr: int) -> list[float]:
        out = [0.0] * n
        for k in range(n):
            for g in vh[k]:
                out[k] += min(vh[k][g], vr[k].get(g, 0.0)) * vr[k].get(g, 0.0)
            if nh[k] != 0 and nr[k] != 0:
                out[k] /= nh[k] * nr[k]
            out[k] *= math.e ** (-((lh - lr) ** 2) / (2 * sigma ** 2))
        return out

    scores = []
    for rs, c in zip(refs, cands):
        vh, nh, lh = vec(ngrams(c.split(), n))
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(ngrams(r.split(), n))
            total = [a + b for a, b in zip(total, sim(vh, vr, nh, nr, lh, lr))]
        scores.append(sum(total) / n / len(rs) * 10.0)
    return sum(scores) / len(scores) if scores else 0.0


def _pycoco(refs: list[list[str]], cands: list[str]) -> dict[str, float] | None:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        return None
    gts = {i: rs for i, rs in enumerate(refs)}
    res = {i: [c] for i, c in enumerate(cands)}
    return {"bleu4": float(Bleu(4).compute_score(gts, res, verbose=0)[0][3]),
            "rouge_l": float(Rouge().compute_score(gts, res)[0]), "cider": float(Cider().compute_score(gts, res)[0])}


def caption_scores(refs: list[list[str]], cands: list[str]) -> dict[str, float | str]:
    """{bleu4, rouge_l, cider, implementation}: each candidate against its references."""
    if not cands or len(refs) != len(cands) or any(not rs for rs in refs):
        raise ValueError("caption_scores needs one or more references for each of one or more captions")
    refs = [[tokenize(r) for r in rs] for rs in refs]
    cands = [tokenize(c) for c in cands]
    got = _pycoco(refs, cands)
    if got is not None:
        return {**got, "implementation": "pycocoevalcap"}
    return {"bleu4": bleu(refs, cands)[3], "rouge_l": rouge_l(refs, cands), "cider": cider_d(refs, cands),
            "implementation": "fusionweave (pycocoevalcap's definitions; pycocoevalcap not installed)"}
