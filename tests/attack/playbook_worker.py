"""One live playbook of tests/attack/test_playbooks.py, in a process of its own so that the playbooks'
twins run side by side: build the twin of the playbook's topology, start the victims' background
traffic, run the (compressed) playbook, stop the sensors, tear the twin down. What the test
checks it reads afterwards: the ledger and pcaps in ``OUT_DIR/run`` and ``OUT_DIR/result.json``
(the sensors' stop statistics, their capture files, timings).

    python tests/attack/playbook_worker.py PLAYBOOK.yaml TOPOLOGY.yaml OUT_DIR '[[node, argv], ...]'
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(playbook: str, topology: str, out: str, victims: str) -> int:
    from cyberrange.attack.playbook import load_playbook
    from cyberrange.attack.runner import run_playbook
    from cyberrange.model.loader import load_topology
    from cyberrange.twin.build import Twin

    topo = load_topology(topology)
    pb = load_playbook(playbook, topo)
    run_id = f"test-pb-{pb.name}"
    run_dir = Path(out) / "run"
    twin = Twin(topo, run_dir, run_id, log=lambda m: None)
    background: list[subprocess.Popen] = []
    result: dict = {}
    t0 = time.monotonic()
    try:
        twin.start()
        for node, argv in json.loads(victims):
            background.append(twin.popen(node, argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
        if background:
            time.sleep(1.0)                   # the victims' neighbour entries exist
        t1 = time.monotonic()
        run_playbook(pb, topo, twin, run_dir / "ledger.jsonl", run_id)
        result["playbook_s"] = round(time.monotonic() - t1, 1)
    finally:
        for p in background:
            p.terminate()
        result["sensor_stats"] = twin.stop_sensors()
        result["sensor_files"] = {n: str(f) for n, f in twin.sensor_files.items()}
        twin.stop()
    result["total_s"] = round(time.monotonic() - t0, 1)
    (Path(out) / "result.json").write_text(json.dumps(result, default=str))
    return 0


def _unwind(signum, frame):
    raise KeyboardInterrupt     # the test pool stops a worker with SIGTERM: tear the twin down


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # this checkout's cyberrange
    signal.signal(signal.SIGTERM, _unwind)
    signal.signal(signal.SIGHUP, _unwind)
    sys.exit(main(*sys.argv[1:]))
