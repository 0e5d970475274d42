"""Are result lines written as tasks finish? A fast task, then a task whose server answers
RETR after 6 s; look at the result file (-o) and at stdout (a pipe) after 2 s, then SIGKILL."""
import json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, Rule, ScriptedFTPServer  # noqa
srv = ScriptedFTPServer(files={"/fast.bin": b"f" * 1000, "/slow.bin": b"s" * 1000}, rules=[Rule(r"RETR /slow.bin", delay=6)]).start()
w = Path(tempfile.mkdtemp(prefix="tester-flush-")); (w / "base").mkdir()
ini = w / "c.ini"; ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\ntimeout=10\n[local]\ntype=local\nbase_path={w / 'base'}\n")
(w / "t.jsonl").write_text("".join(json.dumps({"task_id": n, "src_id": "p", "src_path": f"/{n}.bin", "dst_id": "local", "dst_path": f"{n}.bin"}) + "\n" for n in ("fast", "slow")))
for mode in ("file", "pipe"):
    out = w / f"res-{mode}.jsonl"
    args = ["-o", str(out)] if mode == "file" else []
    p = subprocess.Popen([CLI, "copy", str(w / "t.jsonl"), "--connections", str(ini), "-j", "2", "--stats", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    fast_done = (w / "base" / "fast.bin").exists()
    if mode == "file":
        seen = out.read_text() if out.exists() else ""
    else:
        os.set_blocking(p.stdout.fileno(), False)
        seen = (p.stdout.read() or b"").decode()
    print(f"{mode}: after 2.5 s fast.bin on disk: {fast_done}; result lines visible: {len(seen.splitlines())}")
    p.send_signal(signal.SIGKILL); p.wait()
    if mode == "file":
        print(f"   after SIGKILL the result file holds {len(out.read_text().splitlines()) if out.exists() else 0} lines")
srv.stop()
