"""One error for every invalid option (litgpt's `validate_args` habit): each config group lists its problems, and
the caller raises them together, before any file is read or any weight loaded. Used by every layer."""

from __future__ import annotations


def checked(problems: list[str], what: str) -> None:
    """Raise one ValueError listing every problem; nothing when the list is empty."""
    if problems:
        raise ValueError(f"invalid {what} options:\n" + "\n".join(f"  - {p}" for p in problems))
