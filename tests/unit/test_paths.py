"""store.path checks (tierstore.paths) and the bad paths / bad URLs an open refuses before it
starts a server or writes a file (issue 14, finding 7)."""

from __future__ import annotations

import doctest
import os

import pytest

import tierstore
from tierstore import paths
from tierstore.errors import ConfigError


def tree(root) -> list[str]:
    """Every path under ``root`` (relative), sorted: 'nothing written' means this is unchanged."""
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def test_doctests():
    result = doctest.testmod(paths, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_new_path_and_missing_parents(tmp_path):
    new = paths.check_new_store_path(tmp_path / "a" / "b" / "store")
    assert new.made == (tmp_path / "a" / "b" / "store", tmp_path / "a" / "b", tmp_path / "a")
    assert tree(tmp_path) == []


def test_empty_directory_and_store_directory(tmp_path):
    new = paths.check_new_store_path(tmp_path)
    assert new.made == () and new.before == frozenset()
    (tmp_path / "catalog").mkdir()
    (tmp_path / "anything").write_text("a store may hold what it likes")
    assert paths.check_new_store_path(tmp_path) is None  # an existing store: nothing to undo
    assert paths.is_store(tmp_path)


def test_interrupted_creation_and_lost_found_are_accepted(tmp_path):
    (tmp_path / "LOCK").write_text("")
    (tmp_path / "access").mkdir()
    (tmp_path / "lost+found").mkdir()
    new = paths.check_new_store_path(tmp_path)
    assert new.before == {"LOCK", "access", "lost+found"}


def test_the_config_file_may_live_in_the_store_directory(tmp_path):
    (tmp_path / "tierstore.toml").write_text("")
    assert paths.check_new_store_path(tmp_path, str(tmp_path / "tierstore.toml")) is not None
    with pytest.raises(ConfigError, match=r"holds other files \(tierstore.toml\)"):
        paths.check_new_store_path(tmp_path, str(tmp_path / "elsewhere" / "tierstore.toml"))


@pytest.mark.parametrize("how", ["file", "under_a_file"])
def test_open_refuses_a_path_that_is_no_directory(tmp_path, how):
    """A regular file was FileExistsError (NotADirectoryError under one): a ConfigError naming
    store.path, raised before any server starts; nothing written."""
    (tmp_path / "f").write_text("data")
    target = {"file": tmp_path / "f", "under_a_file": tmp_path / "f" / "store"}[how]
    why = {"file": "is a file, not a directory", "under_a_file": "cannot be created: .* is a file"}[how]
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match=r"^store\.path: .*" + why):
        tierstore.open(path=str(target), dim=4, env={})
    assert tree(tmp_path) == before and (tmp_path / "f").read_text() == "data"


def test_open_refuses_a_foreign_non_empty_directory(tmp_path):
    """A non-empty directory that is not a store was silently filled with a store."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match=r"^store\.path: .* holds other files \(notes\.txt, photos\) and no "
                                          r"tierstore store"):
        tierstore.open(path=str(tmp_path), dim=4, env={})
    assert tree(tmp_path) == before


def test_read_only_open_of_a_missing_store_creates_nothing(tmp_path):
    with pytest.raises(ConfigError, match=r"^store\.path: .* holds no tierstore store"):
        tierstore.open(path=str(tmp_path / "typo"), dim=4, env={}, read_only=True)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("url", ["redis//x", "http://x", "redis://host:notaport"])
def test_open_with_a_malformed_redis_url(tmp_path, url):
    """Was redis-py's ValueError from inside open (after the store directory was written)."""
    with pytest.raises(ConfigError, match=r"^hot\.redis_url: "):
        tierstore.open(path=str(tmp_path / "new"), dim=4, hot={"redis_url": url}, env={})
    assert tree(tmp_path) == []


def test_require_store(tmp_path):
    with pytest.raises(ConfigError, match=r"^store\.path: '.*typo' \(store\.path in x\.toml\) does not exist"):
        paths.require_store(tmp_path / "typo", "x.toml")
    with pytest.raises(ConfigError, match=r"holds no tierstore store"):
        paths.require_store(tmp_path)
    (tmp_path / "catalog").mkdir()
    paths.require_store(tmp_path)
    assert tree(tmp_path) == ["catalog"]


def test_remove_created_new_directory_and_parents(tmp_path):
    (tmp_path / "keep").mkdir()
    new = paths.check_new_store_path(tmp_path / "a" / "b" / "store")
    (tmp_path / "a" / "b" / "store" / "catalog").mkdir(parents=True)
    (tmp_path / "a" / "b" / "store" / "LOCK").write_text("1")
    paths.remove_created(new)
    assert tree(tmp_path) == ["keep"]


def test_remove_created_keeps_what_was_there(tmp_path):
    (tmp_path / "LOCK").write_text("")
    (tmp_path / "lost+found").mkdir()
    new = paths.check_new_store_path(tmp_path)
    for name in ("catalog", "cold", "access"):
        (tmp_path / name / "x").mkdir(parents=True)
    paths.remove_created(new)
    assert tree(tmp_path) == ["LOCK", "lost+found"]
    paths.remove_created(None)  # an existing store: nothing is ever removed
    paths.remove_created(paths.NewStore(tmp_path / "gone", (tmp_path / "gone",), frozenset()))  # no error
