"""Compare tvc's pickle scan with picklescan, modelscan and fickling: what each catches, how fast.

    .venv/bin/python tests/formats/scanner_bench.py [--mb 500] [--runs 3]

Prints, as Markdown, the verdict of every scanner on the corpus of ``pickle_corpus`` (hostile
files: how many each flags; legitimate files: how many each flags wrongly) and the median
time each takes on a legitimate torch checkpoint of ``--mb`` MB, zip and legacy, in files/s.
Not a test: the suite checks verdicts, never timings. The results are kept in
``tests/formats/pickle_scanners.md``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pickle_corpus

from tvc.errors import TvcError, UnsafePickleError
from tvc.formats import parse_file


def tvc_flags(path: Path) -> bool:
    try:
        parse_file(path)
    except UnsafePickleError:
        return True
    except TvcError:
        return False
    return False


def picklescan_flags(path: Path, strict: bool = False) -> bool:
    from picklescan.scanner import scan_file_path

    return scan_file_path(str(path), strict=strict).issues_count > 0


def modelscan_flags(path: Path) -> bool:
    from modelscan.modelscan import ModelScan

    return len(ModelScan().scan(str(path))["issues"]) > 0


def fickling_flags(path: Path) -> bool:
    import fickling
    from fickling.analysis import Severity

    if zipfile.is_zipfile(path):
        found = fickling.scan_zip_archive(str(path), graceful=True).values()
        return any(r.severity >= Severity.LIKELY_UNSAFE for r in found)
    result = fickling.scan_file(str(path), graceful=True)
    return bool(result.results) and result.severity >= Severity.LIKELY_UNSAFE


SCANNERS = {
    "tvc": tvc_flags,
    "picklescan": picklescan_flags,
    "picklescan --strict": lambda p: picklescan_flags(p, strict=True),
    "modelscan": modelscan_flags,
    "fickling": fickling_flags,
}


def verdicts(tmp: Path) -> None:
    made = {
        "hostile": pickle_corpus.hostile_files(tmp, str(tmp / "MARKER")),
        "benign": pickle_corpus.benign_files(tmp),
    }
    rows: dict[str, dict[str, str]] = {}
    totals = {kind: dict.fromkeys(SCANNERS, 0) for kind in made}
    for kind, files in made.items():
        for i, (name, (filename, data)) in enumerate(sorted(files.items())):
            d = tmp / kind / str(i)
            d.mkdir(parents=True)
            path = d / filename
            path.write_bytes(data)
            row = rows.setdefault(f"{kind}: {name}", {})
            for scanner, flags in SCANNERS.items():
                try:
                    hit = flags(path)
                except Exception as e:
                    row[scanner] = f"error ({type(e).__name__})"
                    continue
                row[scanner] = "flagged" if hit else "-"
                totals[kind][scanner] += hit
    assert not (tmp / "MARKER").exists(), "a scanner ran a payload"
    print("| file | " + " | ".join(SCANNERS) + " |")
    print("|---|" + "---|" * len(SCANNERS))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(row[s] for s in SCANNERS) + " |")
    for kind, label in (("hostile", "hostile flagged"), ("benign", "legitimate flagged")):
        n = len(made[kind])
        print(f"| **{label}** (of {n}) | " + " | ".join(str(totals[kind][s]) for s in SCANNERS))


def timings(tmp: Path, mb: int, runs: int) -> None:
    import torch

    n = mb * (1 << 20) // 4 // 8
    sd = {f"layer.{i}.weight": torch.randn(n) for i in range(8)}
    files = {"zip": tmp / "big.pt", "legacy": tmp / "big_legacy.pt"}
    torch.save(sd, files["zip"])
    torch.save(sd, files["legacy"], _use_new_zipfile_serialization=False)
    del sd
    print(f"\n| scanner | zip {mb} MB: files/s | legacy {mb} MB: files/s |")
    print("|---|---|---|")
    for scanner, flags in SCANNERS.items():
        cells = []
        for path in files.values():
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                try:
                    flags(path)
                except Exception as e:
                    times = [f"error ({type(e).__name__})"]
                    break
                times.append(time.perf_counter() - t)
            if isinstance(times[0], str):
                cells.append(times[0])
            else:
                median = statistics.median(times)
                cells.append(f"{1 / median:,.1f} ({median * 1000:,.0f} ms)")
        print(f"| {scanner} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        verdicts(Path(tmp))
        timings(Path(tmp), args.mb, args.runs)


if __name__ == "__main__":
    main()
