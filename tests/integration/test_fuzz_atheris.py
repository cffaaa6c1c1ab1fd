"""Coverage-guided fuzzing of the decoder (atheris, libFuzzer) in a child process, bounded in time: the
harness (tests/support/fuzz_decoder.py) holds every input to the contract of the independent judge
(``event_judge``), as the property tests of tests/unit/test_fuzz.py do."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from support.event_judge import TOPICS
from support.helpers import TESTS, like, order, run_python, view


def test_atheris_fuzz_run_of_the_decoder_finds_no_contract_violation(tmp_path: Path) -> None:
    """libFuzzer via atheris mutates seed events for a bounded time; the harness asserts the property."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for kind, obj in (("view", view()), ("like", like()), ("order", order())):
        (corpus / kind).write_bytes(bytes([TOPICS.index(f"live.{kind}s")]) + orjson.dumps(obj))
    seconds = int(os.environ.get("STREAMPROC_FUZZ_SECONDS", "12"))
    proc = run_python("-m", "support.fuzz_decoder", str(corpus), f"-max_total_time={seconds}", "-runs=2000000",
                      "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", env={"PYTHONPATH": str(TESTS)},
                      timeout=seconds + 120, cwd=tmp_path)
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    runs = [line for line in proc.stderr.splitlines() if line.startswith("Done ")]
    assert runs and int(runs[-1].split()[1]) > 1000, tail  # "Done N runs in S second(s)"
