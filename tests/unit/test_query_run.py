"""query.run without servers: fake tiers (exact numpy search over what they hold) and a real
catalog. The merge must equal an exact reference over what the catalog places, whatever stale
copies the tiers still hold; a failing tier flags the answer partial; the last tier gets the
bound of what the faster ones found."""

from __future__ import annotations

import numpy as np
import pytest

from tierstore import distance, filters, tiers
from tierstore.catalog import Catalog, Entry, location
from tierstore.engine import query
from tierstore.errors import TierUnavailableError

DIM = 8


class FakeTier:
    """Exact search over the rows it was given (possibly stale: the catalog decides)."""

    def __init__(self, name: str, rows: dict[int, tuple[np.ndarray, tuple[int, int]]]) -> None:
        self.name = name
        self.rows = rows
        self.fail = False
        self.calls: list[dict] = []

    def search_many(self, qs, k, node, ef=None, **kw):
        self.calls.append(kw)
        if self.fail:
            raise TierUnavailableError(f"{self.name} tier: down", tier=self.name)
        ids = list(self.rows)
        mat = np.stack([self.rows[i][0] for i in ids])
        out = []
        for q in qs:
            d = distance.exact("l2", mat, q)
            order = np.argsort(d, kind="stable")[:k]
            locs = [location(*self.rows[ids[j]][1]) for j in order] if self.name != "hot" else None
            out.append(query.TierAnswer([ids[j] for j in order], [float(d[j]) for j in order], False, locs))
        return out


@pytest.fixture()
def world(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((300, DIM)).astype(np.float32)
    cat = Catalog(tmp_path / "cat", dim=DIM, metric="l2", schema={})
    place = {i: ("hot", 0, 0) if i < 50 else ("warm", 1, i) if i < 150 else ("cold", 7, i) for i in range(300)}
    with cat.write() as txn:
        for i, (t, seg, pos) in place.items():
            cat.put_entry(txn, Entry(i, tiers.CODES[t], 0, i, seg, pos, 1, i))
    # every tier also holds stale copies of vectors that live elsewhere (moved, not yet removed)
    tier_rows = {t: {i: (vecs[i], (seg, pos)) for i, (tt, seg, pos) in place.items() if tt == t} for t in tiers.NAMES}
    tier_rows["hot"].update({i: (vecs[i], (0, 0)) for i in range(50, 70)})  # left hot for warm
    tier_rows["warm"].update({i: (vecs[i], (1, 999 + i)) for i in range(150, 170)})  # stale row of a cold one
    fakes = [FakeTier(t, tier_rows[t]) for t in tiers.NAMES]
    yield cat, vecs, fakes
    cat.close()


def reference(vecs, q, k):
    d = distance.exact("l2", vecs, q)
    return np.argsort(d, kind="stable")[:k].tolist()


def test_merge_equals_an_exact_reference_and_drops_stale_copies(world):
    cat, vecs, fakes = world
    qs = vecs[[3, 60, 160, 299]] + 0.01
    hits, slots = query.run(cat, fakes, qs, 10, filters.TRUE)
    for h, q in zip(hits, qs, strict=True):
        assert h.ids() == reference(vecs, q, 10)
        assert len(set(h.ids())) == 10  # a stale copy never duplicates a vector
        assert not h.partial
    assert [s[0] for s in slots] == [3, 60, 160, 299]  # slots of the best hits, in rank order


def test_the_last_tier_gets_the_bound_of_the_faster_tiers(world):
    cat, vecs, fakes = world
    query.run(cat, fakes, vecs[[3]], 5, filters.TRUE)
    kw = fakes[-1].calls[0]
    assert tiers.ORDER[-1].searched_last and kw["bounds"][0] < np.inf and "nprobe" in kw
    # the faster tiers get no bound (asked again for a larger page when stale copies were dropped)
    assert fakes[0].calls and all(c == {} for c in fakes[0].calls + fakes[1].calls)


def test_a_failing_tier_flags_the_answer_partial_or_raises_when_strict(world):
    cat, vecs, fakes = world
    fakes[1].fail = True
    (h,), _ = query.run(cat, fakes, vecs[[100]], 5, filters.TRUE)
    assert h.partial and not h.tiers["warm"].ok and 100 not in h.ids()
    with pytest.raises(TierUnavailableError):
        query.run(cat, fakes, vecs[[100]], 5, filters.TRUE, strict=True)
    for f in fakes:
        f.fail = True
    with pytest.raises(TierUnavailableError):
        query.run(cat, fakes, vecs[[100]], 5, filters.TRUE)


def test_a_deleted_vector_is_never_returned(world):
    cat, vecs, fakes = world
    with cat.write() as txn:
        cat.delete_entry(txn, 3)
    (h,), _ = query.run(cat, fakes, vecs[[3]], 5, filters.TRUE)
    assert 3 not in h.ids() and h.ids() == [i for i in reference(vecs, vecs[3], 6) if i != 3][:5]
