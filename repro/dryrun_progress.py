"""--dry-run outcomes and the live progress line on a pty (python pty)."""
import json, os, pty, subprocess, sys, tempfile, time, select
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, Rule, ScriptedFTPServer  # noqa

srv = ScriptedFTPServer(files={f"/d/f{i}.bin": os.urandom(300_000) for i in range(6)},
                        rules=[Rule(r"RETR .*", delay=0.5)]).start()
bad = ScriptedFTPServer(password="other").start()
work = Path(tempfile.mkdtemp(prefix="tester-dry-"))
local = work / "local"; local.mkdir()
ini = work / "c.ini"
ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\n"
               f"[bad]\ntype=ftp\nhost=127.0.0.1\nport={bad.port}\nuser=user\npass=secret\n"
               f"[local]\ntype=local\nbase_path={local}\n")
def task(i, conn="p", src=None, dst=None):
    return json.dumps({"task_id": f"t{i}", "src_id": conn, "src_path": src or f"/d/f{i}.bin", "dst_id": "local", "dst_path": dst or f"out/f{i}.bin"})
cases = {
    "all-good": [task(i) for i in range(3)],
    "missing-remote-file": [task(0, src="/d/nope.bin")],
    "bad-login": [task(0, conn="bad")],
    "unknown-conn": [task(0, conn="zzz")],
    "invalid-line": ["{not json"],
    "dst-escapes": [task(0, dst="../x")],
    "dst-exists-fail": [json.dumps({"task_id": "e", "src_id": "p", "src_path": "/d/f0.bin", "dst_id": "local", "dst_path": "exists.bin", "options": {"if_exists": "fail"}})],
}
(local / "exists.bin").write_text("x")
for name, lines in cases.items():
    f = work / f"{name}.jsonl"; f.write_text("\n".join(lines) + "\n")
    srv.commands.clear()
    p = subprocess.run([CLI, "copy", str(f), "--connections", str(ini), "--dry-run", "--stats", "0"], capture_output=True, text=True, timeout=60)
    verbs = sorted({c.split()[0] for c in srv.commands})
    print(f"=== dry-run {name}: exit {p.returncode}; stdout lines {len(p.stdout.splitlines())}: {p.stdout.strip()[:250]}")
    print(f"    stderr: {p.stderr.strip()[-300:]}")
    print(f"    server verbs: {verbs}; files written: {[str(x.relative_to(local)) for x in local.rglob('*') if x.is_file()]}")

# progress on a pty
f = work / "all.jsonl"; f.write_text("\n".join(task(i) for i in range(6)) + "\n")
for args in (["-o", str(work / "res.jsonl")], []):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(CLI, [CLI, "copy", str(f), "--connections", str(ini), "-j", "2", *args])
    buf = b""
    while True:
        try:
            r, _, _ = select.select([fd], [], [], 20)
            if not r: break
            chunk = os.read(fd, 65536)
            if not chunk: break
            buf += chunk
        except OSError:
            break
    _, status = os.waitpid(pid, 0)
    text = buf.decode(errors="replace")
    print(f"=== pty {args}: exit {os.waitstatus_to_exitcode(status)}; {len(buf)} bytes; carriage returns {text.count(chr(13))}; escape seqs {text.count(chr(27))}")
    print("    last 600 chars:", repr(text[-600:]))
srv.stop(); bad.stop()
