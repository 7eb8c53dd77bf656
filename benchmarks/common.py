"""What every benchmark script shares: logging, the command line it reports, and publishing a
result (the JSON file, the printed markdown section, and that section replaced in RESULTS.md)."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_MD = REPO / "benchmarks/RESULTS.md"


@contextmanager
def servers(name: str) -> Iterator[tuple[Path, str, Any]]:
    """A temp dir with a private redis-server (+RediSearch) and S3 server (weed mini) in it:
    yields (dir, redis url, S3Server); the S3 credentials are exported for boto3."""
    from tierstore.services import RedisServer, S3Server

    with tempfile.TemporaryDirectory(prefix=f"tierstore-bench-{name}-") as d:
        tmp = Path(d)
        redis_srv = RedisServer(tmp / "redis").start()
        try:
            s3 = S3Server(tmp / "s3").start()
            try:
                os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = s3.access_key, s3.secret_key
                yield tmp, redis_srv.url, s3
            finally:
                s3.stop()
        finally:
            redis_srv.stop()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def command(module: str, argv: list[str]) -> str:
    """How to rerun this benchmark from the repository root (recorded with every result)."""
    exe = Path(sys.executable)
    exe_s = os.path.relpath(exe, REPO) if exe.is_relative_to(REPO) else str(exe)
    return f"{exe_s} -m {module} {shlex.join(argv)}".rstrip()


def update_results(section: str, path: Path) -> None:
    """Replace the section whose heading is ``section``'s first line (up to the next ``## ``
    heading) in the markdown file at ``path``, or append it; the rest of the file is kept."""
    title = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# tierstore benchmark results\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    text = pattern.sub(lambda _: section.rstrip() + "\n\n", text, count=1) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section.rstrip() + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def publish(res: dict[str, Any], out: Path, section: str, results_md: str | None, text: str | None = None) -> None:
    """Write ``res`` as JSON to ``out`` (``text``: already serialised), print ``section`` and,
    unless ``results_md`` is empty, replace it in that markdown file. An existing file is never
    replaced (a second run the same day writes ``<name>-2.json``, ...): RESULTS.md may cite it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stem, n = out.stem, 2
    while out.exists():
        out = out.with_name(f"{stem}-{n}{out.suffix}")
        n += 1
    out.write_text((text if text is not None else json.dumps(res, indent=2)) + "\n")
    print(section)
    if results_md:
        update_results(section, Path(results_md))
    log(f"wrote {out}" + (f" and its section of {results_md}" if results_md else ""))
