"""Download into a full volume. First, as root: mkdir -p /tmp/tester-small && mount -t tmpfs -o size=1m tmpfs /tmp/tester-small
(umount it afterwards).
3 tasks of 600 kB with -j 3; expect IO_ERROR for the ones that do not fit, no temp left."""
import json, os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, ScriptedFTPServer  # noqa
small = Path("/tmp/tester-small")
srv = ScriptedFTPServer(files={f"/f{i}.bin": os.urandom(600_000) for i in range(3)}).start()
w = Path(tempfile.mkdtemp(prefix="tester-enospc-"))
ini = w / "c.ini"; ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\n[local]\ntype=local\nbase_path={small}\n")
(w / "t.jsonl").write_text("".join(json.dumps({"task_id": f"t{i}", "src_id": "p", "src_path": f"/f{i}.bin", "dst_id": "local", "dst_path": f"f{i}.bin"}) + "\n" for i in range(3)))
p = subprocess.run([CLI, "copy", str(w / "t.jsonl"), "--connections", str(ini), "-j", "3", "--stats", "0"], capture_output=True, text=True, timeout=120)
print("exit", p.returncode)
for l in p.stdout.splitlines():
    r = json.loads(l); print("  ", r["task_id"], r["status"], r.get("error_code"), r["attempts"], r.get("retryable"), r.get("error_message"))
print("  left on volume:", sorted(os.listdir(small)), "traceback:", "Traceback" in p.stderr)
srv.stop()
