"""Real vsftpd with max_per_ip=2 (421 to the 3rd session) and copy -j 8 over 24 files."""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, A_BIN, dl  # noqa
from servers.vsftpd import Vsftpd  # noqa
work = Path(tempfile.mkdtemp(prefix="tester-cap-")); os.chmod(work, 0o755)
root = work / "root"; root.mkdir(); os.chmod(root, 0o755)
for i in range(24):
    (root / f"f{i}.bin").write_bytes(A_BIN)
(work / "vs").mkdir()
v = Vsftpd(root, work / "vs", max_per_ip=2); info = v.start().info()
local = work / "local"; local.mkdir()
ini = work / "c.ini"
ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={info.port}\nuser={info.user}\npass={info.password}\n[local]\ntype=local\nbase_path={local}\n")
(work / "t.jsonl").write_text("".join(json.dumps(dl(f"/f{i}.bin", f"out/f{i}.bin", conn="p")) + "\n" for i in range(24)))
t0 = time.monotonic()
p = subprocess.run([CLI, "copy", str(work / "t.jsonl"), "--connections", str(ini), "-j", "8", "--stats", "0"], capture_output=True, text=True, timeout=300)
res = [json.loads(l) for l in p.stdout.splitlines()]
from collections import Counter
print("exit", p.returncode, f"{time.monotonic()-t0:.1f}s", Counter((r["status"], r.get("error_code"), r["attempts"]) for r in res))
print("bytes ok:", all((local / "out" / f"f{i}.bin").read_bytes() == A_BIN for i in range(24) if (local / "out" / f"f{i}.bin").exists()))
print(p.stderr.strip().splitlines()[-3:])
v.stop()
