"""Regenerate docs/config.md from the field documentation in p2pcluster/_config.py."""

from pathlib import Path

from p2pcluster._config import render_markdown

target = Path(__file__).resolve().parent.parent / "docs" / "config.md"
target.write_text(render_markdown())
print(f"wrote {target}")
