"""More hostile input for copy: a 50 MB line on stdin, a last line without newline,
10 tasks writing the same destination at once (-j 10), NUL bytes in a line."""
import json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, ScriptedFTPServer  # noqa
srv = ScriptedFTPServer(files={f"/f{i}.bin": bytes([i]) * 100_000 for i in range(10)}).start()
w = Path(tempfile.mkdtemp(prefix="tester-hm-")); base = w / "base"; base.mkdir()
ini = w / "c.ini"; ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\n[local]\ntype=local\nbase_path={base}\n")
T = lambda tid, src="/f0.bin", dst="out/x.bin": json.dumps({"task_id": tid, "src_id": "p", "src_path": src, "dst_id": "local", "dst_path": dst})

def go(name, data: bytes, *args):
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-f", "maxrss_kb=%M", CLI, "copy", "-", "--connections", str(ini), "--stats", "0", *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(data, timeout=120)
    res = [json.loads(l) for l in out.splitlines()]
    print(f"=== {name}: exit {p.returncode} {time.monotonic()-t0:.1f}s results {len(res)}",
          [(r.get('task_id'), r['status'], r.get('error_code'), (r.get('error_message') or '')[:90]) for r in res][:12])
    print("   ", [l for l in err.decode(errors='replace').splitlines() if 'maxrss' in l or 'Traceback' in l])
    return res

go("50MB-line", b'{"task_id":"huge","pad":"' + b"x" * 50_000_000 + b'"}\n' + T("after").encode() + b"\n")
go("no-final-newline", T("a", dst="out/a.bin").encode() + b"\n" + T("b", dst="out/b.bin").encode())
go("nul-in-line", b'{"task_id":"n"\x00}\n')
go("same-dst-x10", b"\n".join(T(f"s{i}", src=f"/f{i}.bin", dst="out/same.bin").encode() for i in range(10)) + b"\n", "-j", "10")
data = (base / "out" / "same.bin").read_bytes()
print("    same.bin: 100000 bytes of one byte value:", len(data), len(set(data)) == 1)
print("    leftovers:", [x.name for x in (base / "out").iterdir() if x.name != "same.bin" and x.name not in ("a.bin", "b.bin", "x.bin")])
srv.stop()
