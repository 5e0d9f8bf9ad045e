"""A real ``tvc serve`` process following its alias under a steady stream of requests from
several client threads: 10 alias moves and 3 rollbacks (``tvc rollback``, a separate process),
zero failed requests, and every answer from the version the alias named while the request ran,
or from the one before it (the swap is not instant) — never an older one."""

from __future__ import annotations

import bisect
import subprocess
import sys
import threading
import time

import httpx

from serving_helpers import infer_body, running_serve, sklearn_dir, training_data, wait_for

X = training_data()[0][:2]


def test_alias_flips_and_rollbacks_under_load(reg, commit, cache, tmp_path):
    versions = [commit("clf", sklearn_dir, c) for c in (1.0, 0.1, 0.01)]
    reg.alias("clf", "production", "v1")
    root = reg.root
    # moves: (before, after, target ref) — the alias moved at some moment in [before, after]
    moves: list[tuple[float, float, str]] = [(0.0, 0.0, "clf@v1")]
    answers: list[tuple[float, float, int, str | None]] = []
    stop = threading.Event()
    latest: dict[str, str] = {}

    with running_serve(["clf@production", "--poll", "0.1"], root, cache) as (url, _proc):

        def client(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    s = time.monotonic()
                    try:
                        r = c.post("/v2/models/clf/infer", json=infer_body(X))
                        code, v = r.status_code, r.headers.get("x-tvc-version")
                    except httpx.HTTPError as exc:
                        code, v = -1, repr(exc)
                    e = time.monotonic()
                    answers.append((s, e, code, v))
                    if v is not None:
                        latest[v] = str(e)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        rollback_times = []
        try:

            def seen_after(ref: str, t0: float) -> bool:
                return any(s >= t0 and v == ref for s, _e, _c, v in answers[-50:])

            cycle = ["v2", "v3", "v1"]
            for i in range(10):
                target = f"clf@{cycle[i % 3]}"
                before = time.monotonic()
                reg.alias("clf", "production", target)
                after = time.monotonic()
                moves.append((before, after, target))
                wait_for(lambda t=target, a=after: seen_after(t, a))
            for _ in range(3):
                before = time.monotonic()
                out = subprocess.run(
                    [sys.executable, "-m", "tvc", "-R", str(root), "rollback", "clf", "production"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                after = time.monotonic()
                target = out.stdout.split("→")[-1].strip().split()[0]
                assert target.startswith("clf@v"), out.stdout
                moves.append((before, after, target))
                wait_for(lambda t=target, a=after: seen_after(t, a))
                first = min(s for s, _e, _c, v in answers if s >= after and v == target)
                rollback_times.append(first - after)
        finally:
            stop.set()
            for t in threads:
                t.join()

    assert len(answers) > 100
    failed = [a for a in answers if a[2] != 200]
    assert failed == [], failed[:5]
    afters = [m[1] for m in moves]
    befores = [m[0] for m in moves]
    wrong = []
    for s, e, _code, v in answers:
        lo = bisect.bisect_right(afters, s) - 1  # the last move surely done when it started
        hi = bisect.bisect_right(befores, e) - 1  # the last move begun before it ended
        allowed = {moves[j][2] for j in range(max(lo - 1, 0), hi + 1)}
        if v not in allowed:
            wrong.append((s, e, v, allowed))
    assert wrong == [], wrong[:5]
    served = {v for _s, _e, _c, v in answers}
    assert served == {v.ref for v in versions}
    print(f"rollback → first answer from the old version: {[round(t, 3) for t in rollback_times]}")
