"""docs/SETTINGS.md: the table of every setting, rendered from the documentation each
setting carries in mysocial.config (`python -m mysocial.config` rewrites the file)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_DOC = ROOT / "docs" / "SETTINGS.md"
SETTINGS_BEGIN = "<!-- settings:begin -->"
SETTINGS_END = "<!-- settings:end -->"


@dataclass(frozen=True)
class Setting:
    """Documentation of one environment variable (rendered in docs/SETTINGS.md)."""

    env: str
    default: str
    doc: str


def markdown(settings: Iterable[Setting]) -> str:
    """The table: variable, default (paths relative to the checkout), meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in settings:
        default = s.default.replace(str(ROOT), ".") if s.default else "(empty)"
        rows.append(f"| `{s.env}` | `{default}` | {s.doc} |")
    return "\n".join(rows)


def sync(settings: Iterable[Setting], path: Path = SETTINGS_DOC) -> bool:
    """Rewrite the table between the settings markers of `path`; True if it changed."""
    text = path.read_text()
    if SETTINGS_BEGIN not in text or SETTINGS_END not in text:
        raise ValueError(f"{path} lacks the {SETTINGS_BEGIN} / {SETTINGS_END} markers")
    head, _, rest = text.partition(SETTINGS_BEGIN)
    _, _, tail = rest.partition(SETTINGS_END)
    new = f"{head}{SETTINGS_BEGIN}\n{markdown(settings)}\n{SETTINGS_END}{tail}"
    if new != text:
        path.write_text(new)
        return True
    return False
