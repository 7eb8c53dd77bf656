"""The warm growing segment's label table (arrays, not per-row dicts): every answer must match a
plain reference model of the same rows, whatever order labels arrive in."""

import numpy as np
import pytest

from tierstore import filters
from tierstore.catalog import location
from tierstore.config import WarmConfig
from tierstore.tiers.warm.growing import GROWING, Growing

DIM = 16
SCHEMA = {"c": "tag", "n": "numeric"}


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(x: np.ndarray, q: np.ndarray, rows: list[int], k: int) -> list[int]:
    d = 1 - x[rows] @ q
    return [rows[i] for i in np.argsort(d, kind="stable")[:k]]


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_growing_answers_match_a_reference_model(order):
    n, base = 3000, 5_000_000  # labels of a late growing segment: far from 0
    x = unit(n, 1)
    labels = np.arange(base, base + n)
    if order == "shuffled":  # (a reopen adds rows in catalog order: the table must re-base)
        labels = np.random.default_rng(2).permutation(labels)
    meta = [{"c": f"t{int(lab) % 7}", "n": int(lab) % 100} for lab in labels]
    g = Growing(DIM, "cosine", WarmConfig(ef_construction=64))
    red = filters.compile_filter({"c": "t3"}, SCHEMA)
    for s in range(0, n, 700):  # several adds: the table and the cached mask grow
        g.add(labels[s : s + 700].tolist(), (labels[s : s + 700] + 7).tolist(), x[s : s + 700], meta[s : s + 700])
        g.search(x[0], 5, 64, red)  # caches the mask mid-way
    assert g.rows == g.alive == n and g.next_label == base + n
    assert g.iid_of(int(labels[10])) == int(labels[10]) + 7 and g.iid_of(base - 1) is None
    assert g.has(int(labels[0])) and not g.has(base + n)

    dead = set(labels[::5].tolist())
    for lab in dead:
        g.kill(lab)
    g.kill(int(labels[0]))  # twice: no double count
    assert g.alive == n - len(dead) and g.rows == n and g.is_dead(int(labels[0]))

    row_of = {int(lab): i for i, lab in enumerate(labels)}
    live = [i for i, lab in enumerate(labels.tolist()) if lab not in dead]
    for qi in range(20):
        q = x[live[qi * 7]]
        iids, dist, locs = g.search(q, 10, 200, filters.TRUE)
        assert iids[0] == int(labels[live[qi * 7]]) + 7  # finds itself
        assert all(iid - 7 not in dead for iid in iids)
        assert locs[0] == location(GROWING, int(labels[live[qi * 7]]))
        # filtered: t3 rows only, alive only (few enough for the exact scan)
        want = exact(x, q, [i for i in live if meta[i]["c"] == "t3"], 10)
        fi, fd, _ = g.search(q, 10, 64, red)
        assert [row_of[i - 7] for i in fi] == want
        assert np.allclose(fd, 1 - x[want] @ q, atol=1e-5)

    # a filter first seen now is built from the stored metadata
    rng = filters.compile_filter({"n": {"$lt": 10}}, SCHEMA)
    want = exact(x, x[live[3]], [i for i in live if meta[i]["n"] < 10], 10)
    assert [row_of[i - 7] for i in g.search(x[live[3]], 10, 64, rng)[0]] == want

    # a filter most rows pass: the graph walk with hnswlib's filter callback (label - base)
    most = filters.compile_filter({"n": {"$lt": 95}}, SCHEMA)
    for qi in range(10):
        got = g.search(x[live[qi]], 10, 200, most)[0]
        assert len(got) == 10 and all(meta[row_of[i - 7]]["n"] < 95 and i - 7 not in dead for i in got)
        assert got[0] == int(labels[live[qi]]) + 7 or meta[live[qi]]["n"] >= 95

    # revive a dead row: it is served again
    lab = int(labels[5])
    g.index.unmark_deleted(lab)
    g.revive(lab)
    assert not g.is_dead(lab) and g.alive == n - len(dead) + 1
    assert g.search(x[5], 1, 64, filters.TRUE)[0] == [lab + 7]
    # iids_of: what a seal reads
    assert g.iids_of(labels[:4]).tolist() == (labels[:4] + 7).tolist()


def test_a_failed_add_leaves_no_rows():
    g = Growing(DIM, "cosine", WarmConfig(ef_construction=32))
    g.add([10, 11], [1, 2], unit(2, 3), [{}, {"a": 1}])
    with pytest.raises(RuntimeError, match="dimensionality"):
        g.add([12, 13], [3, 4], unit(2, 4)[:, :5], [{}, {}])  # wrong dim: hnswlib refuses
    assert g.rows == g.alive == 2 and not g.has(12)
    assert sorted(g.search(unit(1, 3)[0], 5, 32, filters.TRUE)[0]) == [1, 2]
    assert g.search(unit(2, 3)[1], 1, 32, filters.compile_filter({"a": 1}, {"a": "numeric"}))[0] == [2]
