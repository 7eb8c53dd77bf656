"""A bounded crash campaign for CI: kill -9 the writer (and its redis-server / S3 server) inside
``open()`` and inside every kind of operation, on both hot backends, and check every acknowledged
write by content after each crash (see chaos_harness.py and chaos_model.check_store).

About 2.5 min on 2 idle cores (7 min with a campaign running beside it). The long campaign is
``python -m benchmarks.chaos``. ``TIERSTORE_CHAOS_SRC=DIR`` runs the workers on the ``tierstore``
package in DIR (a snapshot: ``git archive HEAD tierstore | tar -x -C DIR``, so edits in progress in
the checkout do not land mid-campaign). Reproduce a failure
with the seed it prints: ``TIERSTORE_CHAOS_SEED=<seed> pytest tests/chaos -k <param>`` (the
operations and kill points are seeded; where in an operation a kill lands depends on timing, so
a rerun finds the same class of failure, not always the same ids). ``TIERSTORE_CHAOS_TRIALS``
adds random trials after the fixed plan.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_harness import Campaign  # noqa: E402

SEED = int(os.environ.get("TIERSTORE_CHAOS_SEED", "14"))
EXTRA = int(os.environ.get("TIERSTORE_CHAOS_TRIALS", "0"))

# After the first trial (killed while the store is being filled): kills inside every operation
# kind and inside open(), with the redis-server and S3 killed in some of them.
PLANS = [
    {"phase": "op", "kind": "upsert_existing", "nth": 1, "victims": ["redis"], "mode": "together"},
    {"phase": "open", "victims": [], "mode": "together"},
    {"phase": "op", "kind": "move", "nth": 2, "victims": ["s3"], "mode": "server-first"},
    {"phase": "op", "kind": "policy", "nth": 1, "victims": [], "mode": "together"},
    {"phase": "open", "victims": ["redis"], "mode": "server-in-open"},
    {"phase": "op", "kind": "upsert_existing", "nth": 2, "victims": [], "mode": "together"},
    {"phase": "op", "kind": "delete", "nth": 1, "victims": ["redis"], "mode": "server-first"},
    {"phase": "op", "kind": "compact", "nth": 1, "victims": [], "mode": "together"},
]


def report(summary: dict) -> str:
    lines = [f"chaos campaign {summary['backend']}/{summary['redis']} seed={summary['seed']}: "
             f"{summary['violations']} violations in {summary['checks_with_violations']} of {summary['checks']} "
             f"checks after {summary['kills']} kills ({summary['violation_kinds']}); "
             f"reproduce: TIERSTORE_CHAOS_SEED={summary['seed']} pytest tests/chaos"]
    for c in summary["failures"]:
        lines.append(f"- check in trial {c['trial']} after kills {json.dumps(c['after_kills'])}:")
        lines += [f"    {json.dumps(item)[:400]}" for item in c["items"][:6]]
    return "\n".join(lines)


@pytest.mark.parametrize("backend,redis", [("search", "embedded"), ("vectorset", "external")])
def test_crash_campaign(tmp_path: Path, backend: str, redis: str) -> None:
    camp = Campaign(tmp_path, backend=backend, redis=redis, seed=SEED, size=200)
    try:
        camp.trial()  # killed inside the first (bulk) upsert
        for plan in PLANS:
            camp.trial(dict(plan))
        for _ in range(EXTRA):
            camp.trial()
        camp.final_check()
    finally:
        camp.close()
    s = camp.summary()
    print(report(s))
    assert s["kills"] >= len(PLANS), f"too few kills landed: {s['kill_points']} (logs under {tmp_path})"
    assert s["checks"] >= 4, f"too few checks ran (logs under {tmp_path})"
    assert s["violations"] == 0, report(s) + f"\n(worker logs under {tmp_path / 'logs'})"
