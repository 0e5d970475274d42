"""Real vsftpd with deny_file={.*} (a common hardening line): uploads write `.name.<rand>.part` first."""
import json, os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, A_BIN, UP_BIN, dl, ul  # noqa
from servers.vsftpd import Vsftpd  # noqa
work = Path(tempfile.mkdtemp(prefix="tester-vsdeny-")); os.chmod(work, 0o755)
root = work / "root"; root.mkdir(); os.chmod(root, 0o755)
(root / "a.bin").write_bytes(A_BIN)
(work / "vs").mkdir()
v = Vsftpd(root, work / "vs", extra_config={"deny_file": "{.*}"}); info = v.start().info()
local = work / "local"; (local / "in").mkdir(parents=True); (local / "in" / "up.bin").write_bytes(UP_BIN)
ini = work / "c.ini"
ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={info.port}\nuser={info.user}\npass={info.password}\n[local]\ntype=local\nbase_path={local}\n")
(work / "t.jsonl").write_text(json.dumps(ul("in/up.bin", "/up.bin", conn="p")) + "\n" + json.dumps(dl("/a.bin", "out/a.bin", conn="p")) + "\n")
p = subprocess.run([CLI, "copy", str(work / "t.jsonl"), "--connections", str(ini), "--stats", "0"], capture_output=True, text=True, timeout=120)
print(f"=== vsftpd deny_file={{.*}}: exit {p.returncode}")
for l in p.stdout.splitlines():
    r = json.loads(l); print("  ", r["task_id"], r["status"], r.get("error_code"), r["attempts"], r.get("error_message"))
lf = subprocess.run(["lftp", "-u", f"{info.user},{info.password}", "-p", str(info.port), "-e",
                    f"set ftp:ssl-allow no; put {local / 'in' / 'up.bin'} -o /up-lftp.bin; quit", "127.0.0.1"],
                   capture_output=True, text=True, timeout=60)
print("   lftp put: exit", lf.returncode, lf.stderr.strip()[:200])
print("   server root:", sorted(x.name for x in root.iterdir()))
v.stop()
