"""The short fuzz runs: 2,000 seeded cases of mutated files and command lines (benchmarks/fuzz_cli.py), and
100 simulations of mutated netx files, quantized graphs and inputs in Lava, end in a clean refusal or a
success, never an internal error, a crash, a hang, or an exit 0 on input that is invalid by construction;
and valid inputs among them still work."""

import json
import subprocess
import sys

from paths import FIXTURES, REPO


def test_short_fuzz_run_has_no_internal_error_hang_or_silent_accept(tmp_path):
    if not (FIXTURES / "nir-paper").exists():
        import pytest

        pytest.skip("shared fixtures not found")
    out = tmp_path / "fuzz.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fuzz_cli.py"), "--cases", "2000", "--seed", "11",
                        "--case-timeout", "20", "--json", str(out), "--workdir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["cases"] == 2000
    bad = [f for f in res["findings"] if f["result"] in ("internal", "crash", "hang", "garbage")]
    assert bad == [], json.dumps(bad[:10], indent=1)
    totals = {}
    for counts in res["table"].values():
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    # a fuzzer that only refuses is no pass: the valid and harmless cases must still run
    assert totals.get("success", 0) >= 300 and totals.get("refused", 0) >= 1000, totals
    assert all(res["table"][kind].get("success", 0) > 0 for kind in ("nir", "netx", "qgraph", "run", "placement",
                                                                       "input", "cli")), res["table"]


def test_short_lava_fuzz_run_has_no_internal_error_hang_or_silent_accept(tmp_path):
    if not (FIXTURES / "netx").exists():
        import pytest

        pytest.skip("shared fixtures not found")
    out = tmp_path / "fuzz.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fuzz_cli.py"), "--backend", "lava", "--cases", "100",
                        "--seed", "11", "--case-timeout", "60", "--json", str(out), "--workdir", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["cases"] == 100 and res["backend"] == "lava"
    bad = [f for f in res["findings"] if f["result"] in ("internal", "crash", "hang", "garbage")]
    assert bad == [], json.dumps(bad[:10], indent=1)
    # Lava really ran the valid ones, of each kind
    assert all(res["table"][kind].get("success", 0) > 0 for kind in ("netx", "qgraph", "input")), res["table"]
