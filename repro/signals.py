"""SIGINT / SIGTERM / double SIGINT during `ftp-pooler copy` against a throttled pyftpdlib.

8 tasks of 2 MB at 400 kB/s each (about 5 s per file), -j 4; signal after 1.5 s.
Reports exit status, result lines (per status), .part files left, elapsed time."""
import json, os, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
HERE = Path(__file__).parent
PY = str(HERE.parent / ".venv/bin/python")
CLI = str(HERE.parent / ".venv/bin/ftp-pooler")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def scenario(name, sigs, drain, n=8, size=2_000_000, rate=400_000, upload=False):
    work = Path(tempfile.mkdtemp(prefix=f"tester-sig-{name}-"))
    root = work / "root"; root.mkdir(); local = work / "local"; (local / "in").mkdir(parents=True)
    for i in range(n):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
        (local / "in" / f"u{i}.bin").write_bytes(os.urandom(size))
    port = free_port()
    srv = subprocess.Popen([PY, str(HERE / "throttled_ftpd.py"), str(root), str(port), str(rate)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.8)
    ini = work / "c.ini"
    ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={port}\nuser=user\npass=secret\n[local]\ntype=local\nbase_path={local}\n")
    tasks = work / "t.jsonl"
    if upload:
        tasks.write_text("".join(json.dumps({"task_id": f"u{i}", "src_id": "local", "src_path": f"in/u{i}.bin", "dst_id": "p", "dst_path": f"/up/u{i}.bin"}) + "\n" for i in range(n)))
    else:
        tasks.write_text("".join(json.dumps({"task_id": f"t{i}", "src_id": "p", "src_path": f"/f{i}.bin", "dst_id": "local", "dst_path": f"out/f{i}.bin"}) + "\n" for i in range(n)))
    t0 = time.monotonic()
    p = subprocess.Popen([CLI, "copy", str(tasks), "--connections", str(ini), "-j", "4", "--drain-seconds", str(drain), "--stats", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for delay, sig in sigs:
        time.sleep(delay)
        p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill(); out, err = p.communicate(); print("  HUNG: killed after 60 s")
    el = time.monotonic() - t0
    res = [json.loads(l) for l in out.splitlines()]
    parts = [str(x.relative_to(work)) for x in work.rglob("*") if ".part" in x.name]
    srv.terminate(); srv.wait()
    statuses = {}
    for r in res:
        statuses.setdefault((r["status"], r.get("error_code")), []).append(r["task_id"])
    print(f"=== {name}: exit {p.returncode}  {el:.1f}s  results {len(res)}/{n}  {statuses}")
    print("   part files left:", parts)
    if upload:
        print("   server .part:", [x.name for x in (root / "up").glob(".*")] if (root / "up").exists() else [])
    print("   stderr tail:", err.strip().splitlines()[-4:])
    msgs = {r.get("error_message") for r in res if r["status"] == "failed"}
    print("   failure messages:", list(msgs)[:3])
    return p.returncode


scenario("sigint-drain1", [(1.5, signal.SIGINT)], drain=1)
scenario("sigterm-drain1", [(1.5, signal.SIGTERM)], drain=1)
scenario("sigint-drain30-finishes", [(1.5, signal.SIGINT)], drain=30)
scenario("double-sigint", [(1.5, signal.SIGINT), (0.5, signal.SIGINT)], drain=30)
scenario("sigterm-upload-drain1", [(1.5, signal.SIGTERM)], drain=1, upload=True)
scenario("sigint-before-start", [(0.05, signal.SIGINT)], drain=1)
