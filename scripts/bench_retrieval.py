#!/usr/bin/env python
"""Benchmark exact L2 retrieval: plain full matrix + argsort vs cnnbase's streamed, blocked top-k ``rank``.

Two modes:

* **compare** (default): the same random database (stored as .npy, float16 by default) and queries are ranked by
  (a) *plain*: load the whole database into RAM as float32, one full ``(nq, n_db)`` distance matrix
  (``‖q‖² − 2QXᵀ + ‖x‖²``, torch), full ``argsort``, keep the top k; and (b) *rank*:
  ``cnnbase.heads.retrieval.rank`` on a read-only memmap with ``topk``. Each runs in its own subprocess so that
  peak memory (``ru_maxrss``) is not mixed; the script prints times, the speed ratio, agreement of the results
  and the peak resident memory of each (total, and above the process's size right after its imports).
* **huge** (``--huge N --dir DIR``): writes an ``N × 4096`` float16 memmap to DIR (reused when already there
  with the right shape), plants near-duplicates of half of the 100 queries at known rows, and ranks the 100
  queries with top-100 in a subprocess: time, GB/s streamed, GFLOP/s, peak memory, and whether every planted
  row came back first. 1M rows is an 8 GB file; the plain method would need 16 GB of float32 for it.

Examples::

    python scripts/bench_retrieval.py --quick                       # seconds
    python scripts/bench_retrieval.py                               # 200k × 4096 database, 100 queries
    python scripts/bench_retrieval.py --quick --huge 20000 --dir /tmp/bench
    python scripts/bench_retrieval.py --huge 1000000 --dir /data/bench   # 8 GB file

Timing notes: the machine may be shared (read ratios, not absolutes); the database file is read through the
page cache, warm after the first run (cold-cache numbers need a dropped cache, which this script does not do).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HUGE_DIM = 4096
HUGE_QUERIES = 100
HUGE_TOPK = 100


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# ----------------------------------------------------------------------------------------------------------
# workers (run in subprocesses)
# ----------------------------------------------------------------------------------------------------------
def _worker(args: argparse.Namespace) -> None:
    import torch

    from cnnbase.heads.retrieval import rank

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    base_rss = _maxrss_bytes()
    Q = np.load(work / "queries.npy")
    k = args.topk
    out: dict[str, float | int | str] = {"method": args.worker}
    if args.worker == "plain":
        t0 = time.perf_counter()
        X = torch.from_numpy(np.load(work / "database.npy").astype(np.float32))
        out["load_s"] = time.perf_counter() - t0
        Qt = torch.from_numpy(Q.astype(np.float32))
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            D = (Qt * Qt).sum(1, keepdim=True) - 2.0 * (Qt @ X.T) + (X * X).sum(1)[None, :]
            order = torch.argsort(D, dim=1)[:, :k]
            dist = D.gather(1, order).clamp_min(0).sqrt()
            times.append(time.perf_counter() - t0)
            del D
        idx, dist = order.numpy(), dist.numpy()
    else:
        db = np.load(work / "database.npy", mmap_mode="r")
        out["load_s"] = 0.0
        rank(Q[:2], db[:64], topk=min(k, 64))  # warm-up (lazy torch initialisation), not timed
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            idx, dist = rank(Q, db, topk=k, block_size=args.block_size)
            times.append(time.perf_counter() - t0)
    out["time_s"] = min(times)
    out["peak_rss"] = _maxrss_bytes()
    out["peak_over_imports"] = out["peak_rss"] - base_rss
    np.save(work / f"{args.worker}_idx.npy", idx)
    np.save(work / f"{args.worker}_dist.npy", dist)
    print(json.dumps(out))


def _huge_worker(args: argparse.Namespace) -> None:
    import torch

    from cnnbase.heads.retrieval import rank

    if args.threads:
        torch.set_num_threads(args.threads)
    base_rss = _maxrss_bytes()
    db = np.load(args.db_path, mmap_mode="r")
    Q = np.load(args.queries_path)
    rank(Q[:2], db[:64], topk=8)  # warm-up, not timed
    t0 = time.perf_counter()
    idx, dist = rank(Q, db, topk=HUGE_TOPK, block_size=args.block_size)
    elapsed = time.perf_counter() - t0
    np.save(Path(args.queries_path).with_name("huge_idx.npy"), idx)
    out = {
        "time_s": elapsed,
        "peak_rss": _maxrss_bytes(),
        "peak_over_imports": _maxrss_bytes() - base_rss,
    }
    print(json.dumps(out))


def _run_worker(argv: list[str]) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {argv[:2]} failed with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------
# modes
# ----------------------------------------------------------------------------------------------------------
def _random_unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def compare(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_retrieval_") as tmp:
        work = Path(tmp)
        db = np.lib.format.open_memmap(
            work / "database.npy", mode="w+", dtype=args.dtype, shape=(args.n_db, args.dim)
        )
        chunk = max(1, (64 * 2**20) // (4 * args.dim))
        for s in range(0, args.n_db, chunk):
            e = min(args.n_db, s + chunk)
            db[s:e] = _random_unit(rng, e - s, args.dim)
        # queries: near-duplicates of database rows plus fresh random vectors
        n_dup = args.nq // 2
        rows = rng.choice(args.n_db, size=n_dup, replace=False)
        Q = np.concatenate(
            [db[np.sort(rows)].astype(np.float32), _random_unit(rng, args.nq - n_dup, args.dim)]
        )
        Q[:n_dup] += 0.05 * _random_unit(rng, n_dup, args.dim)
        np.save(work / "queries.npy", Q.astype(np.float32))
        db.flush()
        del db
        size = args.n_db * args.dim * np.dtype(args.dtype).itemsize
        print(
            f"compare: database {args.n_db} × {args.dim} {args.dtype} ({_fmt_bytes(size)}), {args.nq} queries, "
            f"top-{args.topk}, best of {args.repeat}, torch threads {args.threads or 'default'}"
        )
        common = ["--work", str(work), "--topk", str(args.topk), "--repeat", str(args.repeat)]
        common += ["--threads", str(args.threads)]
        if args.block_size:
            common += ["--block-size", str(args.block_size)]
        res = {m: _run_worker(["--worker", m, *common]) for m in ("plain", "rank")}
        pi, pd = np.load(work / "plain_idx.npy"), np.load(work / "plain_dist.npy")
        ri, rd = np.load(work / "rank_idx.npy"), np.load(work / "rank_dist.npy")

    flops = 2.0 * args.nq * args.n_db * args.dim
    for m, r in res.items():
        extra = f" (+ load into RAM {r['load_s']:.3f} s)" if m == "plain" else " (streamed from the memmap)"
        print(
            f"  {m:5s}: {r['time_s']:.3f} s{extra}, {flops / r['time_s'] / 1e9:.0f} GFLOP/s; "
            f"peak RSS {_fmt_bytes(r['peak_rss'])} ({_fmt_bytes(r['peak_over_imports'])} above imports)"
        )
    speed = res["plain"]["time_s"] / res["rank"]["time_s"]
    speed_load = (res["plain"]["time_s"] + res["plain"]["load_s"]) / res["rank"]["time_s"]
    over = res["rank"]["peak_over_imports"]
    mem = (
        f"memory {res['plain']['peak_over_imports'] / over:.1f}x"
        if over > 0
        else f"memory: plain +{_fmt_bytes(res['plain']['peak_over_imports'])}, rank never above the import-time peak"
    )
    print(f"  ratio plain/rank: time {speed:.2f}x ({speed_load:.2f}x counting plain's load), {mem}")
    same_order = float((pi == ri).mean())
    overlap = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(pi, ri, strict=True)]))
    print(
        f"  agreement: same index at same rank {100 * same_order:.2f}%, top-{args.topk} set overlap "
        f"{100 * overlap:.2f}%, max |Δdistance| {float(np.abs(pd - rd).max()):.2e}"
    )


def huge(args: argparse.Namespace) -> None:
    n, d = args.huge, HUGE_DIM
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"huge_{n}x{d}_float16.npy"
    rng = np.random.default_rng(args.seed)
    planted = np.sort(rng.choice(n, size=HUGE_QUERIES // 2, replace=False))
    fresh = True
    if path.exists():
        try:
            old = np.load(path, mmap_mode="r")
            fresh = old.shape != (n, d) or old.dtype != np.float16
            del old
        except (OSError, ValueError):
            fresh = True
    if fresh:
        t0 = time.perf_counter()
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
        chunk = 16384
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            mm[s:e] = _random_unit(rng, e - s, d)
            if (s // chunk) % 16 == 15:
                mm.flush()
        mm.flush()
        del mm
        print(f"huge: wrote {path} ({_fmt_bytes(n * d * 2)}) in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"huge: reusing {path} ({_fmt_bytes(n * d * 2)})")
    db = np.load(path, mmap_mode="r")
    qrng = np.random.default_rng(args.seed + 1)
    Q = np.concatenate([db[planted].astype(np.float32), _random_unit(qrng, HUGE_QUERIES - len(planted), d)])
    Q[: len(planted)] += 0.05 * _random_unit(qrng, len(planted), d)
    del db
    qpath = folder / "huge_queries.npy"
    np.save(qpath, Q)
    argv = [
        "--huge-worker",
        "--db-path",
        str(path),
        "--queries-path",
        str(qpath),
        "--threads",
        str(args.threads),
    ]
    if args.block_size:
        argv += ["--block-size", str(args.block_size)]
    r = _run_worker(argv)
    idx = np.load(folder / "huge_idx.npy")
    found = float((idx[: len(planted), 0] == planted).mean())
    gb = n * d * 2 / 1e9
    flops = 2.0 * HUGE_QUERIES * n * d
    print(
        f"  rank {HUGE_QUERIES} queries × {n} × {d} float16, top-{HUGE_TOPK}: {r['time_s']:.2f} s, "
        f"{gb / r['time_s']:.2f} GB/s streamed, {flops / r['time_s'] / 1e9:.0f} GFLOP/s"
    )
    print(
        f"  peak RSS {_fmt_bytes(r['peak_rss'])} ({_fmt_bytes(r['peak_over_imports'])} above imports; "
        f"the file is {_fmt_bytes(n * d * 2)}, float32 in RAM would be {_fmt_bytes(n * d * 4)})"
    )
    print(f"  planted near-duplicates ranked first: {100 * found:.0f}% of {len(planted)}")
    for p in (qpath, folder / "huge_idx.npy"):
        p.unlink(missing_ok=True)
    if not args.keep:
        path.unlink(missing_ok=True)
        print(f"  removed {path} (pass --keep to reuse it)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a run of a few seconds")
    ap.add_argument(
        "--n-db", type=int, default=None, help="database size for compare (default 200000; quick 20000)"
    )
    ap.add_argument(
        "--dim", type=int, default=None, help="feature dimension for compare (default 4096; quick 512)"
    )
    ap.add_argument("--nq", type=int, default=100, help="number of queries (compare)")
    ap.add_argument("--topk", type=int, default=100, help="neighbours kept per query (compare)")
    ap.add_argument(
        "--dtype", choices=("float16", "float32"), default="float16", help="stored database dtype"
    )
    ap.add_argument(
        "--block-size", type=int, default=None, help="rank's database rows per block (default: auto)"
    )
    ap.add_argument(
        "--repeat", type=int, default=None, help="timed repetitions, best kept (default 3; quick 2)"
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--huge", type=int, default=None, metavar="N", help="huge mode: N × 4096 float16 memmap")
    ap.add_argument("--dir", default=None, help="folder for the huge memmap (needs N·8 KiB of disk)")
    ap.add_argument("--keep", action="store_true", help="huge mode: keep the memmap file for the next run")
    ap.add_argument("--skip-compare", action="store_true", help="with --huge: run only the huge mode")
    # internal: worker processes
    ap.add_argument("--worker", choices=("plain", "rank"), help=argparse.SUPPRESS)
    ap.add_argument("--huge-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--db-path", help=argparse.SUPPRESS)
    ap.add_argument("--queries-path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        _worker(args)
        return
    if args.huge_worker:
        _huge_worker(args)
        return
    args.n_db = args.n_db or (20000 if args.quick else 200000)
    args.dim = args.dim or (512 if args.quick else 4096)
    args.repeat = args.repeat or (2 if args.quick else 3)
    if args.huge is not None and not args.dir:
        ap.error("--huge needs --dir (a folder with room for the N × 4096 float16 file)")
    if args.topk > args.n_db:
        ap.error("--topk must not exceed --n-db")
    if not (args.huge is not None and args.skip_compare):
        compare(args)
    if args.huge is not None:
        huge(args)


if __name__ == "__main__":
    main()
