"""`producer | ftp-pooler copy -`: does a task start when its line arrives? One line, then
the producer waits 4 s before the next and EOF. Prints when the first result line appears."""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI  # noqa
w = Path(tempfile.mkdtemp(prefix="tester-stdin-"))
(w / "l.ini").write_text(f"[local]\ntype=local\nbase_path={w}\n")
line = json.dumps({"task_id": "x", "src_id": "local", "src_path": "a", "dst_id": "local", "dst_path": "b"}) + "\n"
p = subprocess.Popen([CLI, "copy", "-", "--connections", str(w / "l.ini"), "--stats", "0"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
t0 = time.monotonic()
p.stdin.write(line.encode()); p.stdin.flush()
import threading
threading.Timer(4.0, lambda: (p.stdin.write(line.encode()), p.stdin.close())).start()
first = p.stdout.readline()
t_first = time.monotonic() - t0
print(f"first result line after {t_first:.1f} s (the 2nd line and EOF came at 4.0 s)")
p.wait(30)
