"""Readers for the official DC-SFT data files, as released.

Two formats (the released files of github.com/byyx666/DC-SFT, `data/`), JSON list or JSONL:
- SFT (ms-swift): `{"messages": [{"role": "user", "content": "<image>Please provide ..."},
  {"role": "assistant", "content": "goose"}], "images": ["/data/dataset/Imagenet/train/..."]}`
- GRPO / rollouts / evaluation: `{"problem": "...", "solution": "goose", "image": "/data/..."}`

Both become a `Sample`. Ids: a record's own `id` field when present, else its index in the file (the released SFT and
GRPO files hold the same items in the same order, so index ids line up across them). Image paths are remapped with
`image_root` (prefix -> local folder); relative paths resolve against the data file's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_MARKER = "<image>"
ROLES = {"system", "user", "assistant"}


@dataclass
class Sample:
    """One training / evaluation item in a format-neutral shape."""

    id: str
    messages: list[dict[str, str]]  # role/content; user contents may hold "<image>" markers
    images: list[str]
    solution: str | None = None  # gold answer (for scoring, rewards, difficulty)
    source: str = ""  # "file record N" for error messages
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Messages up to (excluding) the final assistant turn: what a sampler is given."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages[:-1]
        return self.messages


def read_text(path: str | Path) -> str:
    """A text file as UTF-8 (a byte-order mark is dropped); a clear error for a missing or non-UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: not UTF-8 (byte {err.start}, line {line}: {data[err.start : err.start + 4]!r}). "
            "Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.json > out.json`."
        ) from None


def _json_error(path: Path, what: str, err: json.JSONDecodeError, lineno: int | None = None) -> ValueError:
    line = err.lineno if lineno is None else lineno
    return ValueError(f"{path}: {what} (line {line}, column {err.colno}): {err.msg}")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list or JSONL file as a list of dicts; errors name the file and the record index (or line)."""
    path = Path(path)
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise _json_error(path, "malformed JSON", err) from None
    else:
        whole = None
        if stripped.startswith("{") and "\n" in stripped.strip():
            try:
                whole = json.loads(text)
            except json.JSONDecodeError:
                whole = None  # JSONL: one object per line, parsed below
        if isinstance(whole, dict):
            lists = [k for k, v in whole.items() if isinstance(v, list)]
            hint = f"; its records seem to be under {lists[0]!r}: save that list as the file" if lists else ""
            raise ValueError(
                f"{path}: one JSON object (keys {sorted(whole)[:5]}) spread over several lines; expected a JSON list of "
                f"records or JSONL (one object per line){hint}"
            )
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise _json_error(
                    path, f"malformed JSONL record {len(records)}; fix or delete that line", err, lineno
                ) from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records or JSONL, got a {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {index} is a {type(record).__name__}, expected an object")
    return records


def remap_path(image: str, image_root: dict[str, str] | None, base_dir: Path) -> str:
    """Apply the first matching prefix of `image_root` (longest first); resolve relative paths against base_dir."""
    image = image.removeprefix("file://")
    for prefix in sorted(image_root or {}, key=len, reverse=True):
        if image.startswith(prefix):
            return str(Path(image_root[prefix]) / image[len(prefix) :].lstrip("/"))
    if not Path(image).is_absolute():
        return str(base_dir / image)
    return image


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def record_to_sample(record: dict[str, Any], index: int, path: Path, image_root: dict[str, str] | None) -> Sample:
    """Convert one record of either official format; a clear error for anything else."""
    where = f"{path} record {index}"
    rid = str(record.get("id", index))
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError(f"{where}: 'messages' must be a list of {{role, content}} objects")
        messages = [{"role": m["role"], "content": str(m.get("content", ""))} for m in messages]
        unknown = sorted({m["role"] for m in messages} - ROLES)
        if unknown:
            raise ValueError(
                f"{where}: unknown role(s) {unknown}; roles are lower-case {sorted(ROLES)} (Qwen's chat template)"
            )
        images = _as_list(record.get("images"))
        solution = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), None)
        if record.get("solution") is not None:
            solution = str(record["solution"])
    elif "problem" in record:
        if "solution" not in record:
            raise ValueError(f"{where}: a 'problem' record needs a 'solution'")
        images = _as_list(record.get("image", record.get("images")))
        markers = IMAGE_MARKER * max(0, len(images) - record["problem"].count(IMAGE_MARKER))
        solution = str(record["solution"])
        messages = [
            {"role": "user", "content": markers + record["problem"]},
            {"role": "assistant", "content": solution},
        ]
    else:
        raise ValueError(
            f"{where}: unknown format (keys {sorted(record)}); expected 'messages' + 'images' or "
            "'problem' + 'solution' + 'image'"
        )
    user_markers = sum(m["content"].count(IMAGE_MARKER) for m in messages if m["role"] != "assistant")
    if user_markers > len(images):
        raise ValueError(f"{where}: {user_markers} '<image>' markers but only {len(images)} images")
    if user_markers < len(images):  # ms-swift convention: unreferenced images go before the first user text
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        missing = IMAGE_MARKER * (len(images) - user_markers)
        messages[first_user] = {"role": "user", "content": missing + messages[first_user]["content"]}
    images = [remap_path(image, image_root, path.parent) for image in images]
    extra = {k: v for k, v in record.items() if k not in ("messages", "images", "image", "problem", "solution", "id")}
    return Sample(id=rid, messages=messages, images=images, solution=solution, source=where, extra=extra)


def read_samples(path: str | Path, image_root: dict[str, str] | None = None) -> list[Sample]:
    """All samples of an official data file; refuses empty files and duplicate ids."""
    path = Path(path)
    samples = [record_to_sample(r, i, path, image_root) for i, r in enumerate(read_records(path))]
    if not samples:
        raise ValueError(f"{path}: the dataset is empty")
    seen: dict[str, int] = {}
    for index, sample in enumerate(samples):
        if sample.id in seen:
            raise ValueError(f"{path}: record {index} repeats id {sample.id!r} of record {seen[sample.id]}")
        seen[sample.id] = index
    return samples
