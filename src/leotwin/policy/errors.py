"""Errors of the control plane."""

from __future__ import annotations


class PolicyError(ValueError):
    """Bad policy input. ``source`` (file or object), ``feature`` (0-based feature/record index
    or None), ``field`` (dotted field path or None); ``str()`` is one line naming them."""

    def __init__(self, message: str, *, source: str = "<policy>", feature: int | None = None,
                 field: str | None = None) -> None:
        self.message = " ".join(str(message).split())
        self.source, self.feature, self.field = source, feature, field
        where = [source]
        if feature is not None:
            where.append(f"feature {feature}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(", ".join(where) + ": " + self.message)
