"""Content checks: ``verify(deep=True)`` finds any single changed byte in any warm segment file,
cold segment object or local cold cache file; a damaged warm segment does not make the store
unusable (its rows are served from the catalog) and ``verify --repair`` rebuilds it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tierstore
from tierstore import cli
from tierstore.tiers.warm import segment

SETTINGS = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim))
    return (centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, dim))).astype(np.float32)


def flip(path, offset: int, xor: int) -> None:
    """Change one byte in place (no truncation: the file may be mapped)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([b ^ xor]))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_warm_finds_itself(store, x: np.ndarray, ids) -> None:
    """Each id is its own nearest warm neighbour, and every sealed row holds what get() returns."""
    hits = store.query_batch(x[ids], k=1, tiers=["warm"])
    for i, h in zip(ids, hits, strict=True):
        assert h.ids() == [i] and abs(h[0].distance) < 1e-5, (i, h)
    for s in store.warm.sealed.values():
        rows = np.flatnonzero(s.alive)
        recs = store.get(store.catalog.user_ids([int(i) for i in np.asarray(s.seg.iids)[rows]]))
        np.testing.assert_array_equal(np.asarray(s.seg.vectors)[rows], unit(np.stack([r.vector for r in recs])))


def test_any_flipped_byte_of_a_warm_segment_is_found_and_repaired(open_store):
    store = open_store(dim=16, warm={"segment_size": 800}, cold={"enabled": False})
    x = vectors(800, seed=1)
    store.upsert(list(range(800)), x, tier="warm")
    store.flush()
    rng = np.random.default_rng(0)

    @SETTINGS
    @given(st.data())
    def one(data):
        (sid, sealed), = store.warm.sealed.items()
        d = sealed.seg.path
        name = data.draw(st.sampled_from(sorted(p.name for p in d.iterdir())), label="file")
        size = (d / name).stat().st_size
        flip(d / name, data.draw(st.integers(0, size - 1), label="offset"), data.draw(st.integers(1, 255)))
        rep = store.verify(deep=True)
        assert not rep["ok"] and rep["warm"]["damaged"] == [sid]
        assert any(d.name in p and name in p for p in rep["problems"]), rep["problems"]
        # not served any more: its rows come from the catalog, exactly
        assert_warm_finds_itself(store, x, rng.choice(800, 20, replace=False).tolist())
        rep = store.verify(deep=True, repair=True)
        assert rep["ok"], rep["problems"]
        assert list(rep["repaired"]["warm"]["rebuilt"]) == [str(sid)] and rep["repaired"]["warm"]["rows"] == 800
        assert not d.exists() and store.warm.damaged == {}

    one()
    assert_warm_finds_itself(store, x, list(range(800)))


def _config(tmp_path, store_path, redis_url) -> str:
    cfg = tmp_path / "tierstore.toml"
    cfg.write_text(f'[store]\npath = "{store_path}"\ndim = 16\n[schema]\ng = "tag"\n'
                   f'[hot]\nredis_url = "{redis_url}"\n[warm]\nsegment_size = 2000\n[cold]\nenabled = false\n')
    return str(cfg)


def test_corrupt_links0_header_leaves_the_store_usable_and_repair_rebuilds_it(tmp_path, redis_server, capsys):
    path = tmp_path / "store"
    cfg = _config(tmp_path, path, redis_server.url)
    x = vectors(5000, seed=2)
    meta = [{"g": str(i % 5)} for i in range(5000)]
    store = tierstore.open(config=cfg, env={})
    for a in range(0, 5000, 2000):  # sealed at 2000 rows
        store.upsert(list(range(a, min(a + 2000, 5000))), x[a : a + 2000], meta[a : a + 2000], tier="warm")
    store.delete(list(range(0, 5000, 97)))  # some dead rows in every segment
    alive = [i for i in range(5000) if i % 97]
    store.close()  # seals the growing rest: three segments
    dirs = sorted((path / "warm").iterdir())
    assert [d.name for d in dirs] == ["seg-00000001", "seg-00000002", "seg-00000003"]
    for d in dirs[:2]:
        raw = bytearray((d / "links0.npy").read_bytes())
        raw[10:30] = b"\xff" * 20  # inside the .npy header dict
        (d / "links0.npy").write_bytes(raw)
    (dirs[1] / segment.CHECKSUMS).unlink()  # as written before checksums: the header cannot be parsed
    legacy = dirs[2] / segment.CHECKSUMS
    legacy.unlink()  # intact but unchecked

    store = tierstore.open(config=cfg, env={})  # used to fail with IntegrityError
    warm = store.stats()["tiers"]["warm"]
    assert sorted(warm["damaged"]) == ["1", "2"] and warm["no_checksums"] == 1
    assert "links0.npy: checksum mismatch" in warm["damaged"]["1"] and "cannot map links0.npy" in warm["damaged"]["2"]
    assert_warm_finds_itself(store, x, alive[::7])  # served from the catalog meanwhile
    hits = store.query(x[3], k=20, filter={"g": "3"}, tiers=["warm"])
    assert hits.ids()[0] == 3 and all(h.metadata["g"] == "3" for h in hits) and len(hits) == 20
    rep = store.verify(deep=True)
    assert not rep["ok"] and rep["warm"]["damaged"] == [1, 2] and rep["warm"]["no_checksums"] == [3]
    assert sum("seg-00000001" in p and "links0.npy" in p for p in rep["problems"]) == 1
    store.close()

    capsys.readouterr()
    assert cli.main(["--config", cfg, "verify", "--deep", "--json"]) == cli.EXIT_INTEGRITY
    capsys.readouterr()
    assert cli.main(["--config", cfg, "verify", "--deep", "--repair", "--json"]) == cli.EXIT_OK
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and sorted(rep["repaired"]["warm"]["rebuilt"]) == ["1", "2", "3"]
    assert rep["repaired"]["warm"]["rows"] == len(alive) and rep["warm"]["no_checksums"] == []

    store = tierstore.open(config=cfg, env={})
    warm = store.stats()["tiers"]["warm"]
    assert warm["damaged"] == {} and warm["no_checksums"] == 0 and warm["sealed_live"] == len(alive)
    assert not any(d.exists() for d in dirs)
    assert_warm_finds_itself(store, x, alive)
    assert store.verify(deep=True)["ok"]
    store.close()


def test_compaction_rewrites_a_damaged_segment_from_the_catalog(open_store):
    store = open_store(dim=16, warm={"segment_size": 1000}, cold={"enabled": False})
    x = vectors(1000, seed=3)
    store.upsert(list(range(1000)), x, tier="warm")
    store.flush()
    (sid, s), = store.warm.sealed.items()
    flip(s.seg.path / "vectors.npy", s.seg.path.joinpath("vectors.npy").stat().st_size - 7, 0x40)
    # a compaction hashes its victims first: the damaged row is not copied into the new segment
    store.delete([0])
    assert store.compact(threshold=0.0)["warm"]["segments"] == 1
    assert store.warm.damaged == {} and sid not in store.warm.sealed
    assert_warm_finds_itself(store, x, list(range(1, 1000)))
    assert store.verify(deep=True)["ok"]


# --- cold -----------------------------------------------------------------------------------------


@pytest.fixture
def cold_store(open_store):
    store = open_store(dim=16, cold={"segment_size": 2000, "cache_size": "64MiB"})
    x = vectors(1500, seed=4)
    store.upsert(list(range(1500)), x, tier="cold")
    return store, x


def _exact_cold(store, x, qi: int) -> None:
    """Every partition probed: the answer is the exact nearest neighbour of x[qi] in cold."""
    total = store.stats()["tiers"]["cold"]["partitions"]
    hits = store.query(x[qi], k=5, tiers=["cold"], nprobe=total, strict=True)
    d = 1 - unit(x) @ unit(x[qi : qi + 1])[0]
    assert hits.ids()[0] == qi
    np.testing.assert_allclose([h.distance for h in hits], np.sort(d)[:5], atol=1e-5)


def test_any_flipped_byte_of_a_cold_object_is_found(cold_store, s3_server):
    store, x = cold_store
    client = s3_server.client()
    (sid, seg), = store.cold.segs.items()
    key, bucket = seg.info["key"], store.cold.bucket
    good = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    f = seg.footer
    # the regions a flip may hit, each drawn equally often: header, blocks (codes), exact vectors,
    # records, footer, trailer
    r0, rl, _ = f.records
    off, length, _ = seg.info["footer"]
    assert f.format == 2 and f.vectors == (int(f.offsets[-1]), r0 - int(f.offsets[-1]))
    regions = [(0, 16), (16, int(f.offsets[-1])), (int(f.offsets[-1]), r0), (r0, r0 + rl), (off, off + length),
               (off + length, len(good))]
    assert regions[-1][1] - regions[-1][0] == 32 and sum(b - a for a, b in regions) == len(good)

    @SETTINGS
    @given(st.sampled_from(regions), st.floats(0, 1, exclude_max=True), st.integers(1, 255))
    def one(region, where, xor):
        at = region[0] + int(where * (region[1] - region[0]))
        bad = bytearray(good)
        bad[at] ^= xor
        client.put_object(Bucket=bucket, Key=key, Body=bytes(bad))
        try:
            rep = store.verify(deep=True)
            assert not rep["ok"] and list(rep["cold"]["damaged"]) == [str(sid)], (at, rep["problems"])
            assert all(p.startswith(f"cold segment {sid} ({key})") for p in rep["problems"])
            if 16 <= at < int(f.offsets[-1]):  # a block: the partition is named
                p = int(np.searchsorted(f.offsets, at, side="right")) - 1
                assert rep["cold"]["damaged"][str(sid)] == [
                    f"partition {p} (rows {int(f.row_starts[p])}..{int(f.row_starts[p + 1]) - 1}) checksum mismatch"]
            elif int(f.offsets[-1]) <= at < r0:  # a page of exact vectors: its rows are named
                g = (at - int(f.offsets[-1])) // (f.page_rows * f.dim * 4)
                assert rep["cold"]["damaged"][str(sid)] == [
                    f"vectors of rows {g * f.page_rows}..{min(f.rows, (g + 1) * f.page_rows) - 1} checksum mismatch"]
        finally:
            client.put_object(Bucket=bucket, Key=key, Body=good)

    one()
    assert store.verify(deep=True)["ok"]
    _exact_cold(store, x, 11)


def test_a_damaged_cache_file_is_found_dropped_and_refetched(cold_store):
    store, x = cold_store
    rng = np.random.default_rng(5)

    @SETTINGS
    @given(st.data())
    def one(data):
        # (the segment's write-through groups of pages are dropped: every example then sees the
        # same files, each fetched from S3; test_cold checks damaged groups)
        store.cold.drop_cache()
        _exact_cold(store, x, int(rng.integers(1500)))  # every partition fetched: all cached
        store.get(list(range(1500)))  # every page of exact vectors too
        store.cold.settle()
        files = sorted(p.name for p in store.cold.cache.root.glob("*.blk"))
        (seg,) = store.cold.segs.values()
        assert len(files) == seg.footer.parts + seg.footer.pages
        name = data.draw(st.sampled_from(files), label="file")
        path = store.cold.cache.root / name
        flip(path, data.draw(st.integers(0, path.stat().st_size - 1), label="offset"), data.draw(st.integers(1, 255)))
        rep = store.verify(deep=True)
        assert not rep["ok"] and len(rep["problems"]) == 1 and name in rep["problems"][0], rep["problems"]
        assert not path.exists()
        _exact_cold(store, x, int(rng.integers(1500)))  # refetched, never served damaged

    one()
    # the local footer copy too: found, rewritten from S3; with repair it is reported as repaired
    (sid, seg), = store.cold.segs.items()
    ftr = store.cold.root / "footers" / f"{sid}.ftr"
    good = ftr.read_bytes()
    flip(ftr, len(good) // 2, 0x01)
    rep = store.verify(deep=True, repair=True)
    assert rep["ok"] and "footer" in rep["repaired"]["cold"][0] and ftr.read_bytes() == good
    # a cached block damaged before this process first maps it is refetched by the query path
    store.cold.settle()
    blk = sorted(store.cold.cache.root.glob("*.blk"))[0]
    store.cold.cache._objs.clear()  # as in a fresh process: nothing decoded yet
    flip(blk, 3, 0x80)
    _exact_cold(store, x, 0)
