"""Checks of ``store.path`` before a store is opened, and undoing a failed creation.

A store directory is recognised by its ``catalog/`` subdirectory. Opening for writing accepts a
store directory, an empty (or absent) directory -- a new store is created there -- and a directory
holding only what a store's own creation writes (an interrupted one); anything else is refused
with a :class:`ConfigError` naming ``store.path``, before anything is written:

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> (d / "notes.txt").write_text("mine")
4
>>> check_new_store_path(d)
Traceback (most recent call last):
...
tierstore.errors.ConfigError: store.path: ... is a directory that holds other files (notes.txt) and no tierstore store; ...

When the open that created a store fails (an unreachable Redis, a bad bucket), what it created is
removed again (:func:`remove_created`): the directory itself if it did not exist, else only the
entries it added. Nothing of an existing store is ever removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("tierstore")

# What a store writes into its directory (store.py, services.RedisServer, cold.ColdTier, ...).
STORE_ENTRIES = frozenset({"LOCK", "catalog", "access", "redis", "cold", "warm"})
# Entries that do not make a directory "someone else's": a fresh file system's lost+found.
_IGNORED = frozenset({"lost+found"})


@dataclass(frozen=True)
class NewStore:
    """What existed at ``path`` before an open that is creating a store there."""

    path: Path
    made: tuple[Path, ...]  # directories that did not exist (path and missing parents), innermost first
    before: frozenset[str]  # names in ``path`` before the open (when it existed)


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a store directory (it has a ``catalog/``)."""
    return (Path(path) / "catalog").is_dir()


def _not_a_dir(path: Path) -> ConfigError | None:
    """A ConfigError when ``path`` (or a parent) exists and is not a directory."""
    if os.path.lexists(path) and not path.exists():
        return ConfigError(f"store.path: {str(path)!r} is a broken symbolic link; point store.path at a directory")
    if path.exists() and not path.is_dir():
        return ConfigError(f"store.path: {str(path)!r} is a file, not a directory; point store.path at a "
                           "store directory or at a new (or empty) one")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return ConfigError(f"store.path: {str(path)!r} cannot be created: {str(parent)!r} is a file, "
                                   "not a directory")
            break
    return None


def check_new_store_path(path: str | os.PathLike[str], config_file: str | None = None) -> NewStore | None:
    """Check ``path`` before opening it for writing. Returns None for an existing store, else
    what exists now (a :class:`NewStore`: this open creates the store). Raises ConfigError for a
    path that is a file, or a non-empty directory that is not a store. ``config_file`` (the
    config's own file) may live in the directory."""
    path = Path(path)
    err = _not_a_dir(path)
    if err is not None:
        raise err
    if not path.exists():
        made = [path]
        for parent in path.parents:
            if parent.exists():
                break
            made.append(parent)
        return NewStore(path, tuple(made), frozenset())
    if is_store(path):
        return None
    try:
        names = {e.name for e in os.scandir(path)}
    except OSError as exc:
        raise ConfigError(f"store.path: {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    allowed = STORE_ENTRIES | _IGNORED
    if config_file is not None and Path(config_file).resolve().parent == path.resolve():
        allowed |= {Path(config_file).name}
    other = sorted(names - allowed)
    if other:
        shown = ", ".join(other[:5]) + (f", ... ({len(other)} entries)" if len(other) > 5 else "")
        raise ConfigError(
            f"store.path: {str(path)!r} is a directory that holds other files ({shown}) and no tierstore "
            "store; a store is created only in a new or empty directory (point store.path at a "
            "subdirectory, e.g. <dir>/tierstore-data)")
    return NewStore(path, (), frozenset(names))


def require_store(path: str | os.PathLike[str], source: str | None = None) -> None:
    """For commands that only work on an existing store: ConfigError when ``path`` holds none
    (a mistyped path must not become a new, empty store)."""
    path = Path(path)
    err = _not_a_dir(path)
    if err is not None:
        raise err
    if not is_store(path):
        where = f" (store.path in {source})" if source else ""
        what = "does not exist" if not path.exists() else "holds no tierstore store"
        raise ConfigError(f"store.path: {str(path)!r}{where} {what}; check the path, or create the store "
                          "with `tierstore init` / `tierstore ingest`")


def remove_created(new: NewStore | None) -> None:
    """Undo a failed open that was creating a store: remove the directory if the open made it,
    else the entries it added. Never raises (the open's own error is the one to report)."""
    if new is None:
        return
    try:
        if new.made:
            shutil.rmtree(new.path, ignore_errors=False)
            for parent in new.made[1:]:
                try:
                    parent.rmdir()  # only while empty: something else may have appeared there
                except OSError:
                    break
            return
        for entry in os.scandir(new.path):
            if entry.name in new.before:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove the files of a store whose creation failed at %s: %s", new.path, exc)


__all__ = ["STORE_ENTRIES", "NewStore", "check_new_store_path", "is_store", "remove_created", "require_store"]
