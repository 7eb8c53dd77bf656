"""The ``tierstore`` command line.

    tierstore demo                         embedded store + wordnet-minilm (or generated data)
    tierstore init --path ./data --dim 384 [--schema lexname=tag ...]   -> tierstore.toml
    tierstore ingest vectors.npy|vectors.npz|records.jsonl|records.parquet [--tier hot]
    tierstore query --vector '[...]' | --like ID  [-k 10] [--filter '{"pos": "n"}'] [--json] [--read-only]
    tierstore stats [--json] [--read-only]
    tierstore move ids.txt --tier warm|hot|cold [--int-ids] [--defer]
    tierstore policy [--dry-run [--read-only]] [--examples 10]   one policy cycle: what moves and why
    tierstore migrate --tier cold (--filter '{"tenant": "acme"}' | --ids ids.txt) [--resume]
    tierstore compact [--threshold 0.3]
    tierstore verify [--quick | --deep] [--repair | --read-only] [--json]
    tierstore export out.jsonl|out.npz|out.parquet [--tier cold] [--read-only]
    tierstore rebuild-hot
    tierstore serve-metrics [--port 9464] [--addr 127.0.0.1] [--read-only]   Prometheus /metrics until Ctrl-C
    tierstore --version

``--read-only`` opens the store as a read-only process: the command runs while a service holds
the store for writing (without it, such a store is locked: exit 3). Long commands (ingest,
export, migrate, verify, compact, rebuild-hot) draw a progress bar with rate and ETA on stderr
when it is a terminal, and print a line per 10% otherwise.

The config comes from ``--config FILE``, else ``$TIERSTORE_CONFIG``, else ``./tierstore.toml``.

Exit codes (for scripts): 0 ok; 1 unexpected error; 2 bad usage, config or input;
3 a server/tier unavailable or the store locked by another process; 4 integrity error (also:
``verify`` found a problem).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Sequence

from ..errors import IntegrityError, StoreLockedError, TierStoreError, TierUnavailableError
from .common import (
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Progress,
    UsageError,
)
from .demo import cmd_demo
from .ingest import cmd_ingest, cmd_init
from .maintenance import cmd_compact, cmd_migrate, cmd_move, cmd_policy, cmd_rebuild_hot, cmd_verify
from .reads import cmd_export, cmd_query, cmd_serve_metrics, cmd_stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tierstore", description="Tiered vector store: Redis HNSW / disk / S3.")
    p.add_argument("--version", action="version", version=f"tierstore {version()}")
    config_help = "TOML config (default: $TIERSTORE_CONFIG or ./tierstore.toml)"
    p.add_argument("--config", help=config_help)
    # --config is accepted before or after the command name
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help: str, json_flag: bool = True, read_only: str | None = None) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common])
        sp.set_defaults(fn=fn, read_only=False)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if read_only is not None:
            sp.add_argument("--read-only", action="store_true", help="open the store read-only: runs beside the "
                            f"process that has it open for writing{read_only}")
        return sp

    sp = add("demo", cmd_demo, "ingest wordnet-minilm (or generated data) into an embedded store; "
             "print recall@10, latency and stats")
    sp.add_argument("--data", help="wordnet-minilm directory (default: found next to the checkout)")
    sp.add_argument("--n", type=int, help="use only the first N vectors (default: all)")
    sp.add_argument("--queries", type=int, help="number of queries (default: all)")
    sp.add_argument("--path", help="keep the store here instead of a temporary directory")

    sp = add("init", cmd_init, "write a config file and create the store")
    sp.add_argument("--path", required=True, help="store directory")
    sp.add_argument("--dim", type=int, required=True)
    sp.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    sp.add_argument("--schema", action="append", metavar="FIELD=tag|numeric", help="filterable field")
    sp.add_argument("--hot-capacity", type=int, default=100_000)
    sp.add_argument("--force", action="store_true", help="overwrite an existing config file")

    sp = add("ingest", cmd_ingest, "upsert vectors from .npy (ids = row numbers), .npz (what export writes, "
             'or a "vectors" array), .jsonl ({"id": ..., "vector": [...], "metadata": {...}} per line) or .parquet '
             "(columns id, vector, text, and metadata columns; needs pyarrow)")
    sp.add_argument("file")
    sp.add_argument("--tier", choices=("hot", "warm", "cold"), help="target tier (default: policy.ingest_tier)")
    sp.add_argument("--batch-size", type=int, default=1000)
    sp.add_argument("--id-field", default="id", help="jsonl key holding the id")
    sp.add_argument("--id-offset", type=int, default=0, help=".npy: id of the first row")

    sp = add("query", cmd_query, "nearest neighbours of a vector or of a stored id", read_only="")
    sp.add_argument("--vector", help="JSON list of floats")
    sp.add_argument("--like", help="use the stored vector of this id")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--filter", help='JSON filter, e.g. \'{"pos": {"$in": ["n", "v"]}}\'')
    sp.add_argument("--ef", type=int)
    sp.add_argument("--nprobe", type=int, help="cold partitions to probe (default: cold.nprobe)")
    sp.add_argument("--strict", action="store_true", help="fail when a tier fails instead of a partial answer")

    add("stats", cmd_stats, "counts, memory, disk and latency per tier", read_only="")
    sp = add("compact", cmd_compact, "rewrite warm and cold segments whose dead fraction passes the "
             "compact_threshold, merge small ones, delete unreferenced S3 objects")
    sp.add_argument("--threshold", type=float, help="dead fraction (default: <tier>.compact_threshold)")
    sp = add("move", cmd_move, "move the ids listed in a file (one per line) to a tier")
    sp.add_argument("id_file")
    sp.add_argument("--tier", required=True, choices=("hot", "warm", "cold"))
    sp.add_argument("--int-ids", action="store_true", help="the ids are integers")
    sp.add_argument("--defer", action="store_true", help="cold: queue; written as one segment at "
                    "cold.segment_size or the next flush")
    sp = add("policy", cmd_policy, "run one policy cycle now: score every vector by its decayed access "
             "count and move vectors between tiers within the budgets (--dry-run: only show the plan and why)",
             read_only=" (with --dry-run only; plans from the access counts the writer last saved)")
    sp.add_argument("--dry-run", action="store_true", help="plan only; move nothing")
    sp.add_argument("--examples", type=int, default=10, help="moves listed per direction with their reason")
    sp = add("migrate", cmd_migrate, "move a selection (by filter or id file) to a tier, in batches with a "
             "progress bar; an interrupted run continues with --resume")
    sp.add_argument("--tier", choices=("hot", "warm", "cold"))
    sp.add_argument("--filter", help='JSON filter over [schema] fields, e.g. \'{"tenant": "acme"}\'')
    sp.add_argument("--ids", help="file with one id per line")
    sp.add_argument("--int-ids", action="store_true", help="the ids in --ids are integers")
    sp.add_argument("--from-tier", action="append", choices=("hot", "warm", "cold"),
                    help="only vectors now in this tier (repeatable)")
    sp.add_argument("--batch-size", type=int, default=5000, help="vectors per batch (cold: per segment)")
    sp.add_argument("--resume", action="store_true", help="continue the interrupted migrate")
    sp = add("verify", cmd_verify, "check catalog vs Redis vs warm segments vs S3 (checksums of every byte of "
             "every warm segment file and cold object, and of the local cold caches); exit 4 when something "
             "is wrong", read_only=" (not with --repair)")
    depth = sp.add_mutually_exclusive_group()
    depth.add_argument("--quick", action="store_true", help="do not download cold objects (footers only) nor "
                       "hash warm segment files (sizes and meta.json only)")
    depth.add_argument("--deep", action="store_true", help="check every byte (the default; for scripts that "
                       "want to say so)")
    sp.add_argument("--repair", action="store_true", help="rebuild damaged warm segments (and those without "
                    "checksums) from the catalog, drop damaged cache files; cold objects are only reported")
    sp = add("export", cmd_export, "write every record (cold ones fetched from S3) to .jsonl, .npz or .parquet "
             "(columns id, vector, text, tier and one per metadata key; needs pyarrow)", read_only="")
    sp.add_argument("out")
    sp.add_argument("--tier", action="append", choices=("hot", "warm", "cold"), help="only these tiers")
    add("rebuild-hot", cmd_rebuild_hot, "rebuild the Redis index from the durable catalog")
    sp = add("serve-metrics", cmd_serve_metrics, "open the store and serve its Prometheus metrics over HTTP "
             "until Ctrl-C (no policy thread; the store stays locked meanwhile, unless --read-only)", read_only="")
    sp.add_argument("--port", type=int, help="TCP port (default: metrics.port, else 9464; 0: any free port)")
    sp.add_argument("--addr", help="address to bind (default: metrics.addr, 127.0.0.1)")
    return p


def version() -> str:
    """The installed package's version (its metadata), as ``tierstore.__version__``."""
    try:
        return importlib.metadata.version("tierstore")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as exc:
        print(f"tierstore: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except json.JSONDecodeError as exc:
        print(f"tierstore: bad JSON argument: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TierUnavailableError, StoreLockedError) as exc:
        print(f"tierstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except IntegrityError as exc:
        print(f"tierstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except TierStoreError as exc:
        code = EXIT_USAGE if isinstance(exc, ValueError) else EXIT_ERROR
        print(f"tierstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("tierstore: interrupted", file=sys.stderr)
        return 130


__all__ = ["EXIT_ERROR", "EXIT_INTEGRITY", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "Progress", "UsageError",
           "build_parser", "main", "version"]
