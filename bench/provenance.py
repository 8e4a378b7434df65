"""Which code a result file measured, and where a run may write its results.

A committed result must describe a commit: a full run from a tree with uncommitted changes
measures code nobody can check out again, so it may not replace the committed results. With
``--allow-dirty`` (experiments) it writes beside them, under ``bench/results/tmp/dirty/``
(git-ignored), and says so in the file.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Rewriting the results is what a run does, so it must not make the next run's tree "dirty"
# (``make bench`` then ``make drills``); everything else in the tree counts.
RESULTS_PATHSPEC = ":(exclude)bench/results"


class DirtyTreeError(RuntimeError):
    """A full run from uncommitted code was about to replace committed results."""


@dataclass(frozen=True)
class Provenance:
    commit: str | None
    # None: git could not tell (no git, not a checkout); treated like dirty.
    dirty: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {"git_commit": self.commit, "git_dirty": self.dirty}

    def describe(self) -> str:
        if self.commit is None:
            return "commit unknown"
        short = self.commit[:12]
        if self.dirty is None:
            return f"commit {short} (uncommitted changes unknown)"
        return f"commit {short}" + (" with uncommitted changes" if self.dirty else "")


def git_provenance(repo: Path) -> Provenance:
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--", ".", RESULTS_PATHSPEC)
    if commit is None or status is None:
        return Provenance(commit, None)
    return Provenance(commit, bool(status.strip()))


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def results_target(committed: Path, provenance: Provenance, *, allow_dirty: bool,
                   dirty_dir: Path) -> Path:
    """Where a full run writes ``committed`` (a results file or folder).

    A clean tree writes the committed results. Anything else refuses, unless ``allow_dirty``,
    which writes the same name under ``dirty_dir`` instead, never over the committed one.
    """
    if provenance.dirty is False:
        return committed
    if allow_dirty:
        return dirty_dir / committed.name
    raise DirtyTreeError(
        f"refusing to write {committed} from {provenance.describe()}: committed results must "
        f"name the commit they measured. Commit first, or pass --allow-dirty to write under "
        f"{dirty_dir} instead.")
