"""Worker of test_sound_threads.py (issue 17, case 3), run in its own process so that a
crash fails the test instead of killing pytest.

``python sound_threads_worker.py LIB PATTERN THREADS ROUNDS`` with LIB ``numpy`` or ``torch``
and PATTERN:

- ``shared``: every round, the main thread makes ``(p, m, v)`` with a functional call, then
  THREADS threads call ``adamupdate(p, g_k, m, v, t)`` on those very objects at once (each with
  its own gradients), so that whatever the library remembers for them is used by all at once;
- ``chains``: every thread runs its own functional loop of a few steps starting from the same
  ``(p, m, v)``, all threads at once, round after round.

Each thread's results must equal a fresh single-threaded call on copies of the same inputs
(computed before the threads start), bitwise, and the shared inputs must stay as they were.
Prints ``ok`` and exits 0, or prints what differed and exits 1.
"""

from __future__ import annotations

import copy
import sys
import threading

import numpy as np

from adamupdate import adamupdate

N = 40_000  # above the size where NumPy groups take the numba kernel (32,768)
CHAIN = 4


def main() -> int:
    lib, pattern, threads, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # Hand the interpreter to another thread as often as possible: calls interleave at many
    # more points than the default 5 ms allows, so a race shows in a few rounds.
    sys.setswitchinterval(1e-6)
    rng = np.random.default_rng(0)
    if lib == "torch":
        import torch

        torch.set_num_threads(2)

        def make() -> list:
            return [torch.from_numpy(rng.standard_normal(N).astype(np.float32)) for _ in range(2)]

        def bits(x):
            return x.numpy().tobytes()
    else:

        def make() -> list:
            return [rng.standard_normal(N).astype(np.float32) for _ in range(2)]

        def bits(x):
            return x.tobytes()

    def all_bits(*trees):
        return [bits(x) for tree in trees for x in tree]

    p, g0 = make(), make()
    grads = [make() for _ in range(threads)]
    p, m, v = adamupdate(p, g0, None, None, 1)

    def chain(p, m, v, g, t):
        for s in range(CHAIN if pattern == "chains" else 1):
            p, m, v = adamupdate(p, g, m, v, t + s)
        return p, m, v

    start, done = threading.Barrier(threads + 1), threading.Barrier(threads + 1)
    job: dict = {}
    results: list = [None] * threads
    errors: list = []

    def work(k: int) -> None:
        while True:
            start.wait()
            if job.get("stop"):
                return
            try:
                results[k] = chain(*job["args"][:3], grads[k], job["args"][3])
            except Exception as error:  # reported by the main thread
                errors.append(f"thread {k}: {type(error).__name__}: {error}")
                results[k] = None
            done.wait()

    pool = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(threads)]
    for thread in pool:
        thread.start()
    failures = []
    for r in range(rounds):
        t = 2 + r
        expected = [all_bits(*chain(*copy.deepcopy((p, m, v)), copy.deepcopy(g), t)) for g in grads]
        inputs = all_bits(p, m, v)
        job["args"] = (p, m, v, t)
        start.wait()
        done.wait()
        if errors:
            failures += errors
            break
        for k in range(threads):
            if all_bits(*results[k]) != expected[k]:
                failures.append(f"round {r}, thread {k}: results differ from a fresh call's")
        if all_bits(p, m, v) != inputs:
            failures.append(f"round {r}: a functional call changed the shared inputs")
        if failures:
            break
        results[:] = [None] * threads
        p, m, v = adamupdate(p, g0, m, v, t)
    job["stop"] = True
    start.wait()
    for thread in pool:
        thread.join()
    print("\n".join(failures) if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
