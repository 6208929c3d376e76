"""Small files in the official DC-SFT layouts, written on demand for tests and benchmarks.

python -c "from assets.test_data import write_color_data; print(write_color_data(__import__('pathlib').Path('/tmp/c')))"
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLORS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 220, 0)}
COLOR_QUESTION = "What color is the image? Output the answer using one word."


def write_color_data(
    folder: Path, n: int = 16, fmt: str = "messages", size: int = 56, colors: list[str] | None = None
) -> Path:
    """n one-colour images with the question 'What color is the image?' in an official format; returns the JSON.

    `fmt`: `messages` (ms-swift SFT rows) or `problem` (problem / solution / image rows). Both formats of the same
    folder hold the same items in the same order, as the released DC-SFT files do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    names = colors or sorted(COLORS)
    rows = []
    for i in range(n):
        color = names[i % len(names)]
        Image.new("RGB", (size, size), COLORS[color]).save(folder / "images" / f"{i}.png")
        if fmt == "messages":
            messages = [
                {"role": "user", "content": "<image>" + COLOR_QUESTION},
                {"role": "assistant", "content": color},
            ]
            rows.append({"messages": messages, "images": [f"images/{i}.png"]})
        else:
            rows.append({"problem": COLOR_QUESTION, "solution": color, "image": f"images/{i}.png"})
    path = folder / f"{fmt}.json"
    path.write_text(json.dumps(rows))
    return path
