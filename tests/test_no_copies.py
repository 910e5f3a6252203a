"""Logic that once stood in several library modules, now written once (issue 19: "no two library functions keep the
same body"); each check counts where the code stands, so that a copy coming back fails here."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("curation", "annotations", "loops")


def _where(pattern: str) -> list[str]:
    """The library files whose code, white space removed, matches the regular expression `pattern`."""
    return sorted(str(path.relative_to(REPO)) for package in PACKAGES for path in (REPO / package).rglob("*.py")
                  if re.search(pattern, "".join(path.read_text(encoding="utf-8").split())))


def test_stored_messages_are_read_by_id_in_one_place():
    """`curation.store.stored_messages`: the labeller's user texts, the failure model's contexts, generate and the
    judge all read (id, messages) of given conversations through it."""
    read = (r"select\(conversations\.c\.id,conversations\.c\.messages\)"  # of a chunk of ids, nothing else
            r"\.where\(conversations\.c\.id\.in_\((chunk|ids\[start:start\+\w+\])\)\)")
    assert _where(read) == ["curation/store/__init__.py"]


def test_k_is_checked_in_one_place():
    """`curation.cluster.run.checked_k`: `cluster` and `find_failures` (the CLI and the loop step) check k with it."""
    assert _where(re.escape('ClusterError(f"k{exc}")')) == ["curation/cluster/run.py"]
