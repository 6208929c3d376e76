"""MMK12 + model-written responses -> the official DC-SFT training files, keeping only verified solutions.

The paper trains its math setting on MMK12 questions with solutions written by a model and verified against the gold
answer (400 for the cold start, 6,400 for post-training). Users bring the responses: a JSONL file of
`{"id": <MMK12 id>, "response": <text>}` from any model (several per id allowed: the first verified one is kept).
A response is kept when its final answer verifies (`scoring.math_match`, math-verify; letters: `scoring.mc_infer`
against the inline choices), the same rule the math rewards and difficulty estimation use. Writes
`mmk12_cold_sft.json`, `mmk12_left_sft.json` (`messages` + `images`) and `mmk12_left_grpo.json` (`problem` /
`solution` / `image`), and returns the counts.
"""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.benchmarks.math_benchmarks import MMK12_PROMPT, inline_choices
from datamodules.convert import seeded_split, stored_image
from datamodules.files import atomic_write_json
from datamodules.scoring import final_answer, math_match, mc_infer


def verified(response: str, answer: str, question: str) -> bool:
    """The response's final answer matches the gold: a letter through the inline choices, anything else through
    math-verify."""
    choices = inline_choices(question)
    if choices and answer.strip() in choices:
        return mc_infer(final_answer(response), choices) == answer.strip()
    return math_match(response, answer)


def read_responses(path: str | Path) -> dict[str, list[str]]:
    """{id: [response, ...]} from a JSONL file, with the line of any malformed record named."""
    out: dict[str, list[str]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.setdefault(str(row["id"]), []).append(str(row["response"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f'{path} line {number}: expected {{"id": ..., "response": ...}} ({err})') from None
    return out


def write_math_files(
    rows: list[dict],
    responses: dict[str, list[str]],
    out_dir: str | Path,
    cold_start: int = 400,
    post_train: int | None = 6400,
    seed: int = 0,
    prefix: str = "mmk12",
) -> dict[str, int]:
    """rows: MMK12 records (`id`, `question`, `answer`, `image`: path or bytes). Returns the counts."""
    out = Path(out_dir)
    kept = []
    without_image = sum(row.get("image") is None for row in rows)
    rows = [row for row in rows if row.get("image") is not None]  # counted, not written as a path "None"
    for row in rows:
        for response in responses.get(str(row["id"]), []):
            if verified(response, str(row["answer"]), str(row["question"])):
                kept.append((row, response))
                break
    counts = {
        "records": len(rows) + without_image,
        "without_image": without_image,
        "with_responses": sum(str(r["id"]) in responses for r in rows),
        "verified": len(kept),
    }
    cold, rest = seeded_split(len(kept), cold_start, post_train, seed)
    files: dict[str, list[dict]] = {"cold_sft": [], "left_sft": [], "left_grpo": []}
    for part, indices in (("cold", cold), ("left", rest)):
        for index in indices:
            row, response = kept[index]
            prompt = MMK12_PROMPT.format(question=row["question"])
            image = stored_image(row["image"], f"{prefix}_{row['id']}", out / "images")
            messages = [{"role": "user", "content": "<image>" + prompt}, {"role": "assistant", "content": response}]
            files[f"{part}_sft"].append({"messages": messages, "images": [image]})
            if part == "left":
                files["left_grpo"].append({"problem": prompt, "solution": str(row["answer"]), "image": image})
    for name, content in files.items():
        atomic_write_json(out / f"{prefix}_{name}.json", content, indent=None)
    return counts | {name: len(content) for name, content in files.items()}
