"""The simulated feed is the same in every interpreter: fresh child processes reproduce it byte for byte."""

from __future__ import annotations

import contextlib
import io

from support.helpers import ROOT, assert_ok, run_python

# The generator's output, digested: the same code runs in this process and in each child.
DIGEST = (
    "import hashlib;from streamproc.sim.generate import generate\n"
    "h=hashlib.sha256()\n"
    "for r in generate(20_000, seed=3):\n"
    "    h.update(f'{r.topic}|{r.key!r}|{r.ts}|{len(r.value)}|'.encode()); h.update(r.value)\n"
    "print(h.hexdigest())\n"
)


def test_same_bytes_in_a_fresh_interpreter_whatever_the_hash_seed():
    """No set/hash ordering leaks into the output: other processes reproduce it byte for byte."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(DIGEST, {})
    here = printed.getvalue().strip()
    for hash_seed in ("0", "4242"):
        out = assert_ok(run_python("-c", DIGEST, env={"PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}))
        assert out.stdout.strip() == here
