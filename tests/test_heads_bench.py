"""The GPU benchmark's logic, on a tiny CPU model (the real run needs an H200)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_heads_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_heads", REPO / "benchmarks" / "bench_heads.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--tiny", "--contexts", "24", "--new-tokens", "3", "--repeats", "1",
                       "--json", str(tmp_path / "rows.json")])
    modes = [r["mode"] for r in rows]
    assert modes[:4] == ["plain", "capture", "eager", "eager-decode"]
    agreement = {r["mode"]: r["fraction"] for r in rows if "fraction" in r}
    assert all(v == 1.0 for v in agreement.values())  # fp32: capture equals eager exactly
    assert (tmp_path / "rows.json").exists()
