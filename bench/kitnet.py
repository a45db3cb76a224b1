"""Benchmark: the kitnet ensemble (Kitsune features + KitNET execution) in packets/s, batched
(numpy, as the detector runs) vs a per-packet implementation of the same model measured in the
same run, and the iforest family in flows/s.

    .venv/bin/python bench/kitnet.py                          # generated capture (bench/telemetry.py)
    .venv/bin/python bench/kitnet.py --pcap FILE.pcap         # any capture
    .venv/bin/python bench/kitnet.py --run-dir runs/<id>      # a drill's stored records

Named baseline -- **per-packet Kitsune**: ``ReferenceExtractor`` (AfterImage's incremental
statistics in dicts, updated one packet at a time, as Kitsune's ``netStat``) followed by
``reference_execute`` (each ensemble autoencoder, then the output one, one packet at a time, as
``KitNET.execute``), on the same trained weights; its training baseline is ``ReferenceDA.train``
(one online SGD step per packet per autoencoder, as Kitsune's ``dA.train``). The reference runs
on the first ``--ref-packets`` packets (it is ~100x slower); rates are per packet.

Our number covers records -> stream keys -> 100 features -> ensemble RMSE per packet; training
(feature mapper + minibatch SGD, ``epochs`` passes) is timed separately. Kitsune's published
Python figure is ~40k packets/s (feature extraction + execution): printed as the goal.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from cyberrange.detect._kitnet_model import KitNET, ReferenceDA, reference_execute
from cyberrange.detect._kitsune_features import ReferenceExtractor, extract, packet_keys
from cyberrange.detect.iforest import IsolationForestDetector

GOAL = 40_000


def load(args):
    if args.run_dir:
        from cyberrange.detect.registry import _columns
        from cyberrange.store import open_store
        store = open_store(os.path.join(args.run_dir, "store.duckdb"))
        run_id = os.path.basename(args.run_dir.rstrip("/"))
        return (store.read("packets", run_id, columns=_columns(store, "packets")),
                store.read("flows", run_id, columns=_columns(store, "flows")), args.run_dir)
    from cyberrange.telemetry.pcap import parse_pcap
    path = args.pcap
    if path is None:
        import telemetry as tb  # bench/telemetry.py's generated capture
        path = os.path.join(tempfile.mkdtemp(prefix="cr-bench-kitnet-"), "gen.pcap")
        tb.make_capture(path, args.packets)
    pk, fl, _ = parse_pcap(path, "bench", "bench")
    return pk, fl, path


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pcap")
    ap.add_argument("--run-dir")
    ap.add_argument("--packets", type=int, default=200_000, help="generated capture size")
    ap.add_argument("--ref-packets", type=int, default=5_000,
                    help="packets the per-packet reference processes")
    ap.add_argument("--train-packets", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    packets, flows, source = load(args)
    n = packets.num_rows
    print(f"input: {source}: {n:,} packets, {flows.num_rows:,} flows")

    # -- training (feature mapper + ensemble + output layer) on the first packets
    keys = packet_keys(packets)
    F = extract(keys)
    X = np.sign(F) * np.log1p(np.abs(F))
    ntr = min(args.train_packets, n)
    net = KitNET(seed=0)
    t0 = time.perf_counter()
    net.fit(X[:ntr], epochs=args.epochs)
    t_train = time.perf_counter() - t0
    print(f"training  batched   : {ntr:,} packets x {args.epochs} epochs in {t_train:.2f} s = "
          f"{ntr / t_train:,.0f} packets/s ({len(net.clusters)} autoencoders)")
    nref_tr = min(ntr, args.ref_packets)
    das = [ReferenceDA(len(c), seed=i) for i, c in enumerate(net.clusters)]
    out_da = ReferenceDA(len(net.clusters), seed=99)
    idx = [np.asarray(c) for c in net.clusters]
    t0 = time.perf_counter()
    for i in range(nref_tr):
        x = X[i]
        out_da.train(np.array([d.train(x[j]) for d, j in zip(das, idx)]))
    t_ref_train = time.perf_counter() - t0
    ours_tr = ntr * args.epochs / t_train
    ref_tr = nref_tr / t_ref_train
    print(f"training  per-packet: {nref_tr:,} packets x 1 pass in {t_ref_train:.2f} s = "
          f"{ref_tr:,.0f} packets/s")
    print(f"training  ratio (packet-updates/s): {ours_tr / ref_tr:.1f}x")

    # -- execution: records -> keys -> features -> RMSE
    def ours():
        k = packet_keys(packets)
        F = extract(k)
        return net.execute(np.sign(F) * np.log1p(np.abs(F)))[0]
    best, med, rmse = best_of(ours, args.repeat)
    rate = n / best
    t0 = time.perf_counter()
    k = packet_keys(packets)
    t1 = time.perf_counter()
    F = extract(k)
    t2 = time.perf_counter()
    net.execute(np.sign(F) * np.log1p(np.abs(F)))
    t3 = time.perf_counter()
    print(f"execute   batched   : {n:,} packets best {best:.3f} s (median {med:.3f} s) = "
          f"{rate:,.0f} packets/s [keys {t1 - t0:.2f} s, features {t2 - t1:.2f} s, "
          f"ensemble {t3 - t2:.2f} s]")
    m = min(args.ref_packets, n)
    sub = {k: v[:m] for k, v in keys.items()}
    parts, out = net.reference_parts()

    def reference():
        ex = ReferenceExtractor()
        cols = [sub[k].tolist() for k in ("t", "size", "mi", "h_src", "h_dst", "jit",
                                          "hp_src", "hp_dst")]
        res = []
        for row in zip(*cols):
            f = np.asarray(ex.update(*row))
            res.append(reference_execute(parts, out, np.sign(f) * np.log1p(np.abs(f))))
        return np.array(res)
    rbest, _, rref = best_of(reference, 1)
    rrate = m / rbest
    # same model: same RMSE on the packets both processed (state starts at the first packet)
    head = rmse[:m]
    agree = np.allclose(rref, head, rtol=1e-4, atol=1e-6)    # ours runs in float32
    print(f"execute   per-packet: {m:,} packets in {rbest:.2f} s = {rrate:,.0f} packets/s "
          f"(RMSE equal to batched: {agree}; max diff "
          f"{np.abs(rref - head).max():.2e})")
    print(f"execute   ratio vs per-packet Kitsune: {rate / rrate:.1f}x")
    print(f"execute   vs the 40k packets/s goal  : {rate / GOAL:.2f}x "
          f"({'met' if rate >= GOAL else 'NOT met'})")

    # -- iforest: flows/s of fit + detect (records -> features -> forest -> alerts)
    if flows.num_rows >= 10:
        det = IsolationForestDetector("bench")
        t0 = time.perf_counter()
        det.fit(flows.slice(0, max(2, flows.num_rows // 4)))
        t_fit = time.perf_counter() - t0
        fb, _, _ = best_of(lambda: det.detect(flows), args.repeat)
        sb, _, _ = best_of(lambda: det.score_flows(flows), args.repeat)
        print(f"iforest   fit on {max(2, flows.num_rows // 4):,} flows: {t_fit:.2f} s; "
              f"detect {flows.num_rows:,} flows best {fb:.3f} s = {flows.num_rows / fb:,.0f} "
              f"flows/s; score_flows {flows.num_rows / sb:,.0f} flows/s")


if __name__ == "__main__":
    main()
