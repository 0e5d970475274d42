"""The docs say what the code does: sentences a change left behind, found by testers."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def test_operations_md_does_not_say_pass_and_ca_files_are_not_watched() -> None:
    """tester3: operations.md still said pass_file/ca_file are 'Not watched' right after
    describing that both are watched and compared by digest (commit f09da18)."""
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert "each `pass_file` and\n   `ca_file`" in text  # the behaviour, described
    assert "Not watched: files that `connections.ini` names" not in text
    assert "any file\nthe refused version read or tried to read" in text


def test_contract_md_describes_the_move_aside_not_dele_first() -> None:
    """tester3: contract.md said an overwrite the server refuses to rename over deletes
    the old file (DELE) and renames again; since 93c6a17 it is moved aside first."""
    text = (DOCS / "contract.md").read_text(encoding="utf-8")
    assert "**`if_exists` on uploads.**" in text
    assert "the worker deletes it (`DELE`) and renames again" not in text
    assert "moved aside" in text and "`.name.<hex>.part.aside`" in text
