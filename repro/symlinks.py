"""Symlinks inside base_path: internal links (should work), a dangling link to outside as the
destination file (must not write outside), a link as the final component of an upload source."""
import json, os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, ScriptedFTPServer  # noqa
srv = ScriptedFTPServer(files={"/a.bin": b"A" * 100}).start()
w = Path(tempfile.mkdtemp(prefix="tester-sym-")); base = w / "base"; outside = w / "outside"
(base / "real").mkdir(parents=True); outside.mkdir()
os.symlink(base / "real", base / "inlink")                  # absolute link inside base
os.symlink("real", base / "rellink")                         # relative link inside base
os.symlink(outside / "new.bin", base / "real" / "dangling")  # dangling, pointing outside
os.symlink(outside / "exists.bin", base / "real" / "existing-out"); (outside / "exists.bin").write_text("keep")
(base / "real" / "up.bin").write_bytes(b"U" * 10)
ini = w / "c.ini"; ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\n[local]\ntype=local\nbase_path={base}\n")
T = lambda tid, **kw: json.dumps({"task_id": tid, "src_id": "p", "src_path": "/a.bin", "dst_id": "local", **kw})
lines = [T("via-abs-inlink", dst_path="inlink/x.bin"), T("via-rellink", dst_path="rellink/y.bin"),
         T("onto-dangling-out", dst_path="real/dangling"), T("onto-link-to-existing-out", dst_path="real/existing-out"),
         T("onto-dangling-skip", dst_path="real/dangling", options={"if_exists": "skip"}),
         json.dumps({"task_id": "up-via-inlink", "src_id": "local", "src_path": "inlink/up.bin", "dst_id": "p", "dst_path": "/up.bin"})]
(w / "t.jsonl").write_text("\n".join(lines) + "\n")
p = subprocess.run([CLI, "copy", str(w / "t.jsonl"), "--connections", str(ini), "--stats", "0", "-j", "1"], capture_output=True, text=True, timeout=60)
for l in p.stdout.splitlines():
    r = json.loads(l); print(f"  {r['task_id']:28s} {r['status']:9s} {r.get('error_code')!s:16s} {r.get('error_message') or ''}")
print("outside:", {x.name: x.read_text()[:10] for x in outside.iterdir()})
print("base/real:", {x.name: ("link->" + os.readlink(x)) if x.is_symlink() else "file" for x in (base / "real").iterdir()})
srv.stop()
