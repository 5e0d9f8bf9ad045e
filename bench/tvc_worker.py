"""One long-lived tvc process for the bench's "tvc-api" row: a training loop or a server.

It imports tvc and opens the registry once, then serves one JSON request per stdin line and
answers each with one JSON line, so the bench can time every commit and checkout from outside
while the process start-up (imports, opening the metadata DB) is paid once, as it is in a
training job that commits each checkpoint through ``tvc.Registry``.

Requests: ``{"op": "commit", "model", "path", "message", "base"}``, ``{"op": "checkout", "ref",
"dest"}``, ``{"op": "checkpoint"}`` (fold the SQLite WAL into the DB, as closing does),
``{"op": "reset_peak"}`` (clears the peak RSS, Linux ``clear_refs``), ``{"op":
"peak"}`` (bytes) and ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import sys


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    import tvc

    reg = tvc.Registry(sys.argv[1])
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "commit":
                res = reg.commit(
                    req["model"], req["path"], message=req["message"], base=req.get("base")
                )
                reply = {"ok": True, "ref": res.version.ref}
            elif op == "checkout":
                reg.checkout(req["ref"], req["dest"])
                reply = {"ok": True}
            elif op == "checkpoint":
                with reg.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                reply = {"ok": True}
            elif op == "reset_peak":
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                reply = {"ok": True}
            elif op == "peak":
                reply = {"ok": True, "peak": _peak_rss()}
            elif op == "quit":
                print(json.dumps({"ok": True}), flush=True)
                return
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the bench, which records the tool as failed
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
