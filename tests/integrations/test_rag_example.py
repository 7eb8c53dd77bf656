"""examples/rag_langchain.py runs: an embedded store (its own redis-server), a LangChain
retriever over it, answers from the retrieved paragraphs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rag_langchain.py"


def test_rag_example_runs(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLE), "--path", str(tmp_path / "rag")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "A: The cold tier keeps the rarely used vectors in S3." in lines
    assert any(line.startswith("A: Redis answers a nearest neighbour query") for line in lines)
    assert "filtered to topic in [policy, safety]: ['policy', 'safety']" in lines
    assert "cold=warm" in lines[0]  # the moved paragraph was still retrieved (first answer above)
    assert (tmp_path / "rag" / "catalog").is_dir()  # a real store, kept at --path
