"""CASES.md F1 through the real CLI: real vsftpd idle_session_timeout=3, --concurrency 1."""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, A_BIN, UP_BIN, Rule, ScriptedFTPServer, dl  # noqa
from servers.vsftpd import Vsftpd  # noqa

work = Path(tempfile.mkdtemp(prefix="tester-f1-"))
root = work / "root"; root.mkdir(); os.chmod(work, 0o755); os.chmod(root, 0o755)
for n in ("one", "two", "three"):
    (root / f"{n}.bin").write_bytes(A_BIN)
v = Vsftpd(root, work / "vs", extra_config={"idle_session_timeout": 3}); (work / "vs").mkdir()
info = v.start().info()
slow = ScriptedFTPServer(files={"/slow.bin": UP_BIN}, rules=[Rule(r"RETR .*", delay=6)]).start()
local = work / "local"; local.mkdir()
ini = work / "c.ini"
ini.write_text(f"[partner]\ntype=ftp\nhost=127.0.0.1\nport={info.port}\nuser={info.user}\npass={info.password}\n"
               f"[other]\ntype=ftp\nhost=127.0.0.1\nport={slow.port}\nuser=user\npass=secret\ntimeout=10\n"
               f"[local]\ntype=local\nbase_path={local}\n")
tasks = [dl("/one.bin", "out/one.bin"), dl("/slow.bin", "out/slow.bin", conn="other"),
         dl("/two.bin", "out/two.bin", retry_count=0), dl("/three.bin", "out/three.bin")]
(work / "t.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
t0 = time.monotonic()
p = subprocess.run([CLI, "copy", str(work / "t.jsonl"), "--connections", str(ini), "--concurrency", "1", "--stats", "0"],
                   capture_output=True, text=True, timeout=120)
print("exit", p.returncode, f"{time.monotonic()-t0:.1f}s")
for line in p.stdout.splitlines():
    r = json.loads(line); print(r["task_id"], r["status"], r.get("error_code"), r["attempts"], r.get("error_message"))
for n in ("one", "two", "three"):
    f = local / "out" / f"{n}.bin"
    print(n, f.exists() and f.read_bytes() == A_BIN)
print(p.stderr[-1500:])
slow.stop(); v.stop()
