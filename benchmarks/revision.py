"""Another revision's ``gaborlayer``, imported beside this checkout's, for side-by-side timing.

    from revision import import_revision     # (from benchmarks/, as the scripts there do)
    before = import_revision("HEAD~3")       # the module gaborlayer_<commit>
    layer = before.GaborConv2d(3, 8, 5)      # that revision's layer, beside gaborlayer.GaborConv2d

The package is taken from git (``git archive``, so uncommitted changes play no part), unpacked into a
temporary directory and renamed ``gaborlayer_<commit>``: every whole word ``gaborlayer`` in its
sources becomes the new name, which also keeps its ``torch.library`` operators
(``gaborlayer::...``) apart from this checkout's. Both then run in one process, in the same rounds:
the only fair way to compare them on a shared, noisy machine.
"""
from __future__ import annotations

import atexit
import importlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def import_revision(rev: str) -> ModuleType:
    """``gaborlayer`` as committed at ``rev`` (any git revision), imported as ``gaborlayer_<commit>``."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=7", f"{rev}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    name = f"gaborlayer_{commit}"
    if name in sys.modules:
        return sys.modules[name]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "gaborlayer"],
                             capture_output=True, check=True).stdout
    where = Path(tempfile.mkdtemp(prefix="gaborlayer-revision-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    package = where / name
    (where / "gaborlayer").rename(package)
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"\bgaborlayer\b", name, path.read_text()))
    sys.path.insert(0, str(where))
    return importlib.import_module(name)


def commit_of(module: ModuleType) -> str:
    """The commit a package from :func:`import_revision` was taken at (its name's suffix)."""
    return module.__name__.removeprefix("gaborlayer_")
