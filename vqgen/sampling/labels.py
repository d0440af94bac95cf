"""Which class each sample is drawn from: labels given by index or by name, checked against the prior's classes."""

from __future__ import annotations

from vqgen.errors import VQGenError


def label_index(label: int | str, names: list[str], option: str = "label") -> int:
    """A class given by name or index (an int, or a string of digits) -> its index among ``names``."""
    if isinstance(label, str) and label in names:
        return names.index(label)
    text = str(label)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise VQGenError(f"{option} {label!r} is not one of the prior's classes (0..{len(names) - 1}: {shown})")


def parse_labels(
    label: str | None, label_names: list[str] | None, conditional: bool, n: int
) -> tuple[list[int] | None, list[int] | None]:
    """``--label`` -> (one label per sample or None, images per grid row or None for rows of 8).

    Accepts a class index or name, a comma-separated list (cycled over the n samples), or
    ``all`` (the default when conditional): n samples spread over the classes, the first
    n % C classes one more, each class one grid row.
    """
    if not conditional:
        if label is not None:
            raise VQGenError("--label was given, but this prior is unconditional")
        return None, None
    names = label_names or []
    if label is None or label == "all":
        base, extra = divmod(n, len(names))
        counts = [base + (c < extra) for c in range(len(names))]
        labels = [c for c, count in enumerate(counts) for _ in range(count)]
        return labels, [count for count in counts if count]
    wanted = [label_index(part.strip(), names, "--label") for part in label.split(",")]
    return [wanted[i % len(wanted)] for i in range(n)], None
