"""Metadata updates without the vector (:meth:`TierStore.update_metadata`).

Each row takes one of two paths, decided by what the change touches:

- **In place.** A change that leaves every ``[schema]`` field as it was (free-form metadata, the
  record's text) changes nothing any tier indexes: Redis holds only the declared fields, warm and
  cold segments only their columns. The catalog entry -- the single truth queries read metadata
  from -- is rewritten in one LMDB transaction; no copy, no new version, no S3 write.
- **Re-placed.** A change to a declared field changes what the tiers filter on, so the vector is
  written again, with its new metadata, into the tier it lives in, through the relocation
  protocol (:func:`relocate`): exactly an upsert of the same vector, a new version, the old copy
  retired after the reader grace. A cold row becomes part of a new segment (batch such updates).

Both run under the engine's write lock, so the entries read first are the ones changed: no
write can slip in between and be overwritten by a stale merge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import inputs, tiers
from ..catalog import Entry, split_text
from ..errors import InvalidInputError, SchemaError, TierUnavailableError
from .relocate import Batch, relocate

_ROW = re.compile(r"^metadata\[(\d+)\]")


def patches_for(patch: Any, n: int) -> list[Mapping[str, Any]]:
    """``patch``: one mapping applied to every id, or one mapping per id."""
    if isinstance(patch, Mapping):
        return [patch] * n
    if isinstance(patch, str | bytes) or not isinstance(patch, Sequence):
        raise InvalidInputError("patch: expected a dict, or a list with one dict per id")
    if len(patch) != n:
        raise InvalidInputError(f"patch: {len(patch)} entries for {n} ids")
    for i, p in enumerate(patch):
        if not isinstance(p, Mapping):
            raise InvalidInputError(f"patch[{i}]: expected a dict, got {type(p).__name__}")
    return list(patch)


def update_metadata(engine: Any, reader: Any, ids: list[str | int], patch: Any, *, replace: bool,
                    text: Any) -> int:
    """Apply ``patch`` to the metadata of ``ids`` (merged key by key, or replacing it whole with
    ``replace``); ``text``: ``...`` keeps each record's text, else the new text (or None) for
    all. Returns how many ids exist (unknown ids are skipped, like :meth:`TierStore.delete`).
    Everything is validated, and every vector a re-placement needs is read, before anything is
    written; the in-place rows commit together, then each tier's re-placed rows (a failure there
    leaves the earlier commits applied: retrying a patch is safe, applying it twice is a no-op)."""
    patches = patches_for(patch, len(ids))
    inputs.check_unique(ids)  # (two patches of one id would be applied to the same old entry)
    if text is not ... and text is not None and not isinstance(text, str):
        raise InvalidInputError(f"text: expected a str or None, got {type(text).__name__}")
    cat, schema = engine.catalog, engine.schema
    with engine.operation(), engine.write_lock:
        with cat.read() as txn:
            found = [(cat.entry(txn, cat.iid(uid)), uid, p) for uid, p in zip(ids, patches, strict=True)]
        where = [i for i, (e, uid, _p) in enumerate(found) if e is not None and e.uid == uid]
        rows = [(found[i][0], found[i][2]) for i in where]
        if not rows:
            return 0
        olds, merged, texts = [], [], []
        for e, p in rows:
            old, old_text = split_text(e.metadata)
            olds.append(old)
            merged.append(dict(p) if replace else {**old, **p})
            texts.append(old_text if text is ... else text)
        try:
            clean = inputs.clean_metadata(merged, len(rows), schema, texts)  # raises before any write
        except SchemaError as exc:  # name the caller's patch, not the row among the ids found
            exc.args = (_ROW.sub(lambda m: f"patch[{where[int(m.group(1))]}] (id {ids[where[int(m.group(1))]]!r})",
                                 str(exc), count=1),)
            raise
        in_place: list[tuple[Entry, bytes]] = []
        moved: dict[int, list[int]] = {}
        for i, ((e, _p), old, (meta, _raw)) in enumerate(zip(rows, olds, clean, strict=True)):
            if all(old.get(f) == meta.get(f) for f in schema):
                in_place.append((e, clean[i][1]))
            else:
                moved.setdefault(e.tier, []).append(i)
        # Every vector a re-placement needs is read first (a cold one from S3): a read that
        # fails leaves nothing written.
        groups = []
        for code, idx in moved.items():
            entries = [rows[i][0] for i in idx]
            vecs = np.stack([r.vector for r in reader.records(entries, locked=True)]).astype(np.float32, copy=False)
            groups.append((code, Batch([e.iid for e in entries], [e.uid for e in entries], entries, vecs,
                                       [clean[i][0] for i in idx], [clean[i][1] for i in idx])))
        if in_place:
            with cat.write() as txn:
                for e, raw in in_place:
                    cat.put_entry(txn, e._replace(meta=raw))
        error: TierUnavailableError | None = None
        for code, batch in groups:  # one commit per tier: a failure leaves the earlier ones applied
            done = relocate(engine, batch, tiers.NAMES[code], origin="upsert", keep_queued=True)
            error = done.error or error  # durable: keep going, then report it
        if error is not None:
            raise error
        return len(rows)
