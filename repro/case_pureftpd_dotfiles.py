"""Real pure-ftpd with -x (no writes to dot-files) / -X (no dot-files at all), hardening
options: uploads write a temporary `.name.<rand>.part` first."""
import json, os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, A_BIN, UP_BIN, dl, ul  # noqa
from servers.pureftpd import PureFTPd  # noqa
for flag in ("-x", "-X"):
    work = Path(tempfile.mkdtemp(prefix="tester-pure-")); os.chmod(work, 0o755)
    root = work / "root"; root.mkdir(); os.chmod(root, 0o777)
    (root / "a.bin").write_bytes(A_BIN)
    (work / "pd").mkdir()
    srv = PureFTPd(root, work / "pd", extra_args=[flag]); info = srv.start().info()
    local = work / "local"; (local / "in").mkdir(parents=True); (local / "in" / "up.bin").write_bytes(UP_BIN)
    ini = work / "c.ini"
    ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={info.port}\nuser={info.user}\npass={info.password}\n[local]\ntype=local\nbase_path={local}\n")
    (work / "t.jsonl").write_text(json.dumps(ul("in/up.bin", "/up.bin", conn="p")) + "\n" + json.dumps(dl("/a.bin", "out/a.bin", conn="p")) + "\n")
    p = subprocess.run([CLI, "copy", str(work / "t.jsonl"), "--connections", str(ini), "--stats", "0"], capture_output=True, text=True, timeout=120)
    print(f"=== pure-ftpd {flag}: exit {p.returncode}")
    for l in p.stdout.splitlines():
        r = json.loads(l); print("  ", r["task_id"], r["status"], r.get("error_code"), r["attempts"], r.get("error_message"))
    print("   server root:", sorted(x.name for x in root.iterdir()))
    srv.stop()
