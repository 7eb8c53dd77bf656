"""The machinery behind the TierStore facade.

* ``core``      -- :class:`Engine`: the write lock, operations in flight, counters, the removal
  scheduler, capacity and spill (what moves, the policy and the metrics share).
* ``relocate``  -- the one copy -> flip -> retire protocol every placement change goes through.
* ``moves``     -- explicit moves, the policy's executor, the cold queue, cold compaction.
* ``reads``     -- the merged query's bookkeeping, records, the read-only process's view.
* ``opening``   -- one open/close path for the writer and read-only processes.
* ``verify``    -- the catalog against every tier.

(Nothing is imported here: the submodules import the tiers, and the policy imports ``moves``.)
"""
