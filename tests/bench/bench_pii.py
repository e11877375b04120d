"""PII benchmark: quality on presidio-synth (stock Presidio vs Guard's default profile) and speed.

    .venv/bin/python tests/bench/bench_pii.py [--quick]

Quality: the dataset is split once, seeded, into a tuning part (70%) and a held-back part (30%) used only
for checking. A finding counts when its type matches a labelled span of the six scored types and covers
at least 80% of it; "left" counts labelled values still present in the redacted text (stock: Presidio's
anonymizer output; Guard: ``guard scan --jsonl``'s ``redacted``). Precision and recall per entity type are
over the whole dataset.

Dataset speed: all 1,500 texts through stock Presidio and through Guard's default profile, in alternating
rounds within one run; the median of the per-round ratios (the machine may be shared).

Speed (CPU time of one core): prompts of 0.5, 1, 2 and 8 KB made of ordinary request sentences mixed with dataset
records (about
a third of the characters, so most prompts hold personal data); one core; stock Presidio pattern-only
(offline) against Guard's ``PIIProfile.findings``; a second table uses dataset records only. ``identical`` checks, on
every speed prompt, that the
fast path returns exactly what ``AnalyzerEngine.analyze`` returns with Guard's recognizers.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATASET = next(
    (
        d / "shared" / "datasets" / "presidio-synth" / "synth_dataset_v2.json"
        for d in ROOT.parents
        if (d / "shared" / "datasets" / "presidio-synth" / "synth_dataset_v2.json").exists()
    ),
    ROOT.parent / "shared" / "datasets" / "presidio-synth" / "synth_dataset_v2.json",
)
TYPES = ("EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "PHONE_NUMBER", "US_SSN", "IP_ADDRESS")
SPLIT_SEED, HOLD_FRACTION = 4, 0.3
SIZES = (512, 1024, 2048, 8192)
PROSE = [
    "Please summarize the following meeting notes for the quarterly planning review.",
    "The deployment pipeline failed twice last week because the integration tests timed out.",
    "We need a short, friendly reply that explains the new refund policy to the customer.",
    "Rewrite this paragraph so that it is easier to read for a non-technical audience.",
    "The customer says the invoice total does not match the order confirmation they received.",
    "Our team decided to move the launch to the second half of the month after the security review.",
    "List three risks of migrating the reporting database, and suggest a mitigation for each one.",
    "Translate the message below into plain English and keep the tone polite.",
    "According to the ticket, the issue started after version 4.2 of the mobile app on 12 March.",
    "Draft an email to the vendor asking for the updated contract and the delivery schedule.",
    "Explain why the build takes 14 minutes and what we could cache between the 3 stages.",
    "The attached log shows 502 errors between 09:14 and 09:20 on the second node.",
]


def _split(data: list[dict]) -> tuple[list[dict], list[dict]]:
    idx = list(range(len(data)))
    random.Random(SPLIT_SEED).shuffle(idx)
    hold = set(idx[: int(len(data) * HOLD_FRACTION)])
    return [d for i, d in enumerate(data) if i not in hold], [d for i, d in enumerate(data) if i in hold]


def stock_engine() -> Any:
    """Stock Presidio, pattern-only, offline: default recognizers on the blank pipeline."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    from guard.screens.pii.engine import BlankSpacyEngine

    email_recognizer.tldextract = types.SimpleNamespace(
        extract=tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    )
    return AnalyzerEngine(nlp_engine=BlankSpacyEngine())


def score(
    rows: list[dict],
    detect: Callable[[str], list[tuple[str, int, int]]],
    redact: Callable[[str, list[tuple[str, int, int]]], str],
) -> dict[str, Any]:
    tp = fp = fn = left = labelled = 0
    per = {t: {"tp": 0, "fp": 0, "fn": 0} for t in TYPES}
    for row in rows:
        text = row["full_text"]
        found = detect(text)
        spans = [s for s in row["spans"] if s["entity_type"] in TYPES]
        used: set[int] = set()
        for s in spans:
            a, b = s["start_position"], s["end_position"]
            hits = [
                i
                for i, (t, x, y) in enumerate(found)
                if t == s["entity_type"] and min(y, b) - max(x, a) >= 0.8 * (b - a)
            ]
            used.update(hits)
            tp, fn = tp + bool(hits), fn + (not hits)
            per[s["entity_type"]]["tp" if hits else "fn"] += 1
        fp += len(found) - len(used)
        for i, (t, _, _) in enumerate(found):
            if i not in used and t in per:
                per[t]["fp"] += 1
        out = redact(text, found)
        left += sum(s["entity_value"] in out for s in spans)
        labelled += len(spans)
    return {
        **_pr(tp, fp, fn),
        "left": left,
        "labelled": labelled,
        "left_pct": round(100 * left / max(labelled, 1), 2),
        "by_type": {t: {**_pr(c["tp"], c["fp"], c["fn"]), "labelled": c["tp"] + c["fn"]} for t, c in per.items()},
    }


def _pr(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r) if p + r else 0, 3)}


def quality(stock: Any, profile: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Precision and recall per split, and per entity type over the whole dataset."""
    from presidio_anonymizer import AnonymizerEngine

    from guard.screens.pii.engine import Finding
    from guard.screens.pii.transform import redact_all

    anonymizer = AnonymizerEngine()
    raw: dict[str, list] = {}

    def stock_detect(text: str) -> list[tuple[str, int, int]]:
        raw[text] = stock.analyze(text, language="en", entities=list(TYPES))
        return [(r.entity_type, r.start, r.end) for r in raw[text]]

    def stock_redact(text: str, _: list) -> str:
        return anonymizer.anonymize(text, raw[text]).text

    def guard_detect(text: str) -> list[tuple[str, int, int]]:
        return [(f.entity_type, f.start, f.end) for f in profile.findings(text)]

    def guard_redact(text: str, found: list[tuple[str, int, int]]) -> str:
        return redact_all(text, [Finding(t, a, b, 1.0) for t, a, b in found])

    data = json.loads(DATASET.read_text())
    tune, hold = _split(data)
    out = {
        split: {"stock": score(rows, stock_detect, stock_redact), "guard": score(rows, guard_detect, guard_redact)}
        for split, rows in (("tuning", tune), ("held_back", hold), ("all", data))
    }
    by = {eng: out["all"][eng]["by_type"] for eng in ("stock", "guard")}
    for split in out.values():
        for q in split.values():
            del q["by_type"]
    return out, {
        t: {
            "labelled": by["guard"][t]["labelled"],
            **{f"{eng}_{k}": by[eng][t][k] for eng in ("stock", "guard") for k in ("precision", "recall")},
        }
        for t in TYPES
    }


def formats(stock: Any, profile: Any) -> dict[str, Any]:
    """Recall on values written in spaced, dashed, dotted and mixed-case formats (the lists of
    tests/filters/test_pii_formats.py, each in a sentence), and findings on its corpus of ordinary text."""
    from tests.filters import test_pii_formats as f

    cases = {
        "IBAN_CODE": [v for i in f.IBANS for v in f.variants(i)],
        "EMAIL_ADDRESS": f.RESERVED + f.PUBLIC,
        "CREDIT_CARD": [c.replace(" ", sep) for c in f.CARDS for sep in (" ", "-", ".", "")],
        "PHONE_NUMBER": f.PHONES,
        "US_SSN": [v for v in f.SSNS if v != "123-45-6789"],  # Presidio drops the famous sample on purpose
        "IP_ADDRESS": f.IPS,
    }
    engines = {
        "stock": lambda t: [
            (r.entity_type, r.start, r.end) for r in stock.analyze(t, language="en", entities=list(TYPES))
        ],
        "guard": lambda t: [(x.entity_type, x.start, x.end) for x in profile.findings(t)],
    }
    out: dict[str, Any] = {}
    for typ, values in cases.items():
        row: dict[str, Any] = {"values": len(values)}
        for name, detect in engines.items():
            hit = 0
            for v in values:
                text = f"Please use {v} for this."
                a, b = 11, 11 + len(v)
                hit += any(t == typ and x <= a and y >= b for t, x, y in detect(text))
            row[f"{name}_recall"] = round(hit / len(values), 3)
        out[typ] = row
    out["ordinary text"] = {
        "values": len(f.PROSE),
        **{f"{n}_recall": None for n in engines},
        **{f"{n}_findings": sum(len(d(t)) for t in f.PROSE) for n, d in engines.items()},
    }
    return out


def prompts(size: int, n: int, rows: list[dict], rng: random.Random, records: float = 0.3) -> list[str]:
    out = []
    for _ in range(n):
        parts, length = [], 0
        while length < size:
            s = rng.choice(rows)["full_text"] if rng.random() < records else rng.choice(PROSE)
            parts.append(s)
            length += len(s) + 1
        out.append(" ".join(parts)[:size])
    return out


def _timed(fn: Callable[[str], Any], texts: list[str], min_s: float) -> float:
    """CPU seconds of this process per text (one core; other load on the machine does not count),
    repeating the set until ``min_s`` has passed."""
    for t in texts[:3]:
        fn(t)
    runs, start = 0, time.process_time()
    while True:
        for t in texts:
            fn(t)
        runs += 1
        elapsed = time.process_time() - start
        if elapsed >= min_s:
            return elapsed / (runs * len(texts))


def speed(stock: Any, profile: Any, quick: bool, records: float) -> dict[str, Any]:
    rows = json.loads(DATASET.read_text())
    rng = random.Random(7)
    out: dict[str, Any] = {}
    for size in SIZES:
        texts = prompts(size, 10 if quick else 40, rows, rng, records)
        nbytes = sum(len(t.encode()) for t in texts) / len(texts)
        s = _timed(lambda t: stock.analyze(t, language="en", entities=list(TYPES)), texts, 0.3 if quick else 1.5)
        g = _timed(profile.findings, texts, 0.3 if quick else 1.5)
        fa = profile.analyzer
        same = sum(_key(fa.analyze(t, profile.entities)) == _key(fa.reference(t, profile.entities)) for t in texts)
        out[str(size)] = {
            "bytes": round(nbytes),
            "stock_ms": round(s * 1e3, 3),
            "stock_mb_s": round(nbytes / s / 1e6, 3),
            "guard_ms": round(g * 1e3, 3),
            "guard_mb_s": round(nbytes / g / 1e6, 3),
            "identical": f"{same}/{len(texts)}",
        }
    return out


def dataset_speed(stock: Any, profile: Any, rounds: int) -> dict[str, Any]:
    """Every text of the dataset through stock Presidio and through Guard, side by side: ``rounds`` rounds,
    each timing both over the whole set, the order alternating; the ratio of each round, and its median
    (the machine may be busy with other work: CPU time of this process, and the median, damp that)."""
    texts = [r["full_text"] for r in json.loads(DATASET.read_text())]
    nbytes = sum(len(t.encode()) for t in texts)

    def stock_fn(t: str) -> Any:
        return stock.analyze(t, language="en", entities=list(TYPES))

    for t in texts[:50]:  # warm both
        stock_fn(t)
        profile.findings(t)
    ratios, stock_s, guard_s = [], [], []
    for i in range(rounds):
        order = [(stock_fn, stock_s), (profile.findings, guard_s)]
        for fn, into in order if i % 2 == 0 else order[::-1]:
            start = time.process_time()
            for t in texts:
                fn(t)
            into.append(time.process_time() - start)
        ratios.append(stock_s[-1] / guard_s[-1])
    med = statistics.median
    return {
        "texts": len(texts),
        "rounds": rounds,
        "stock_ms_per_text": round(med(stock_s) / len(texts) * 1e3, 4),
        "guard_ms_per_text": round(med(guard_s) / len(texts) * 1e3, 4),
        "stock_mb_s": round(nbytes / med(stock_s) / 1e6, 3),
        "guard_mb_s": round(nbytes / med(guard_s) / 1e6, 3),
        "ratio_median": round(med(ratios), 2),
        "ratios": [round(r, 2) for r in ratios],
    }


def _key(results: list) -> list[tuple]:
    return sorted((r.entity_type, r.start, r.end, r.score) for r in results)


def run(quick: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from guard.screens.pii.profile import load_pii_profiles

    profile = load_pii_profiles(ROOT / "filters" / "pii.yaml")["default"]
    stock = stock_engine()
    q, by_type = quality(stock, profile)
    return {
        "quality": q,
        "quality_by_type": by_type,
        "formats": formats(stock, profile),
        "dataset_speed": dataset_speed(stock, profile, 3 if quick else 7),
        "speed": speed(stock, profile, quick, 0.3),
        "speed_dense": speed(stock, profile, quick, 1.0),
        "split": {"seed": SPLIT_SEED, "held_back": HOLD_FRACTION},
        "profile": "default",
    }


def tables(res: dict[str, Any]) -> str:
    lines = [
        "quality (presidio-synth; 6 types; finding = type match covering >= 80% of the label)",
        f"{'split':<10} {'engine':<6} {'precision':>9} {'recall':>7} {'F1':>6} {'left':>10}",
    ]
    for split, by in res["quality"].items():
        for eng, q in by.items():
            lines.append(
                f"{split:<10} {eng:<6} {q['precision']:>9.3f} {q['recall']:>7.3f} {q['f1']:>6.3f} "
                f"{q['left']:>4}/{q['labelled']:<5}"
            )
    lines += [
        "",
        "per entity type, whole dataset (stock | guard)",
        f"{'type':<14} {'labelled':>8} {'P stock':>8} {'R stock':>8} {'P guard':>8} {'R guard':>8}",
    ]
    for t, q in res["quality_by_type"].items():
        lines.append(
            f"{t:<14} {q['labelled']:>8} {q['stock_precision']:>8.3f} {q['stock_recall']:>8.3f} "
            f"{q['guard_precision']:>8.3f} {q['guard_recall']:>8.3f}"
        )
    lines += [
        "",
        "formats (spaced, dashed, dotted, mixed case; tests/filters/test_pii_formats.py)",
        f"{'type':<14} {'values':>6} {'R stock':>8} {'R guard':>8}",
    ]
    for t, q in res["formats"].items():
        if q["stock_recall"] is None:
            lines.append(
                f"{t:<14} {q['values']:>6}  findings: stock {q['stock_findings']}, guard {q['guard_findings']}"
            )
        else:
            lines.append(f"{t:<14} {q['values']:>6} {q['stock_recall']:>8.3f} {q['guard_recall']:>8.3f}")
    d = res["dataset_speed"]
    lines += [
        "",
        f"speed on the dataset ({d['texts']} texts, {d['rounds']} alternating rounds, CPU time of one core)",
        (
            f"stock {d['stock_ms_per_text']} ms/text ({d['stock_mb_s']} MB/s)  guard {d['guard_ms_per_text']} "
            f"ms/text ({d['guard_mb_s']} MB/s)  ratio median {d['ratio_median']}x  rounds {d['ratios']}"
        ),
    ]
    for key, title in (
        ("speed", "~30% dataset records, rest ordinary requests"),
        ("speed_dense", "dataset records only: personal data in nearly every line"),
    ):
        lines += [
            "",
            f"speed (CPU time, one core; prompts: {title})",
            f"{'size':>6} {'stock ms':>9} {'stock MB/s':>11} {'guard ms':>9} {'guard MB/s':>11} {'identical':>10}",
        ]
        for size, s in res[key].items():
            lines.append(
                f"{size:>6} {s['stock_ms']:>9.3f} {s['stock_mb_s']:>11.3f} {s['guard_ms']:>9.3f} "
                f"{s['guard_mb_s']:>11.3f} {s['identical']:>10}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print(tables(result))
    print(json.dumps(result))
