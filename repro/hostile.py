"""Hand-crafted hostile messages through the real `ftp-pooler copy` (scripted FTP server).

Checks, per line: exactly one result, no traceback on stderr, the code; and that
nothing was written outside the local base_path.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, ScriptedFTPServer  # noqa: E402

DATA = os.urandom(1000)
srv = ScriptedFTPServer(files={"/data/a.bin": DATA, "/data/caf\u00e9.bin": DATA}).start()
work = Path(tempfile.mkdtemp(prefix="tester-hostile-"))
base = work / "base"
outside = work / "outside"
(base / "in").mkdir(parents=True)
outside.mkdir()
(base / "in" / "up.bin").write_bytes(DATA)
(outside / "secret.txt").write_text("SECRET")
os.symlink(outside, base / "esc")                       # dir symlink escaping base
os.symlink(outside / "secret.txt", base / "in" / "leak")  # file symlink escaping base
os.symlink("/dev/zero", base / "in" / "zero")           # endless device via symlink
os.mkfifo(base / "in" / "fifo")                         # a FIFO inside base (nobody writes)
(base / "in" / "dir").mkdir()
ini = work / "c.ini"
ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass=secret\ntimeout=3\n"
               f"[local]\ntype=local\nbase_path={base}\n")


def t(tid, src_id="p", src="/data/a.bin", dst_id="local", dst="out/x.bin", **extra):
    d = {"task_id": tid, "src_id": src_id, "src_path": src, "dst_id": dst_id, "dst_path": dst}
    d.update(extra)
    return json.dumps(d).encode()


def deep(n):
    return b'{"task_id":"deep%d","src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/d.bin","options":{"x":' % n + b"[" * n + b"]" * n + b"}}"


big = t("big-exact", options={"pad": ""})
pad = 1048576 - len(big)
big = t("big-exact", options={"pad": "x" * pad})
lines = [
    (b"retry-float", t("retry-float", options={"retry_count": 1e308})),
    (b"retry-bignum", b'{"task_id":"retry-bignum","src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/rb.bin","options":{"retry_count":' + b"9" * 4000 + b"}}"),
    (b"retry-bool", t("retry-bool", dst="out/rbool.bin", options={"retry_count": True})),
    (b"retry-str", t("retry-str", dst="out/rstr.bin", options={"retry_count": "3"})),
    (b"retry-3.0", t("retry-3.0", dst="out/r30.bin", options={"retry_count": 3.0})),
    (b"retry-3.5", t("retry-3.5", dst="out/r35.bin", options={"retry_count": 3.5})),
    (b"verify-str", t("verify-str", dst="out/vs.bin", options={"verify_size": "no"})),
    (b"deep900", deep(900)),
    (b"deep5000", deep(5000)),
    (b"nfd-path", t("nfd-path", src="/data/cafe\u0301.bin", dst="out/nfd.bin")),
    (b"fullwidth-dots", t("fullwidth-dots", dst="\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fx.bin")),
    (b"dst-slashes", t("dst-slashes", dst="///")),
    (b"dst-slash", t("dst-slash", dst="/")),
    (b"src-slashes", t("src-slashes", src="//")),
    (b"dst-dot", t("dst-dot", dst=".")),
    (b"dst-dotdot", t("dst-dotdot", dst="..")),
    (b"dst-dot-segs", t("dst-dot-segs", dst="./out//./y.bin")),
    (b"dst-trailing-slash", t("dst-trailing-slash", dst="out/newdir/")),
    (b"dst-traversal", t("dst-traversal", dst="out/../../outside/pwn.bin")),
    (b"dst-abs", t("dst-abs", dst=str(outside / "abs.bin"))),
    (b"dst-windows", t("dst-windows", dst="..\\..\\outside\\win.bin")),
    (b"dst-drive", t("dst-drive", dst="C:\\Windows\\x.bin")),
    (b"dst-unc", t("dst-unc", dst="\\\\server\\share\\x.bin")),
    (b"dst-symlink-dir", t("dst-symlink-dir", dst="esc/pwn.bin")),
    (b"dst-existing-dir", t("dst-existing-dir", dst="in/dir")),
    (b"dst-name-max", t("dst-name-max", dst="out/" + "n" * 300)),
    (b"dst-emoji-4096", t("dst-emoji-4096", dst="out/" + "\U0001f600" * 4000)),
    (b"ul-symlink-file", t("ul-symlink-file", src_id="local", src="in/leak", dst_id="p", dst="/data/leak.txt")),
    (b"ul-dev-zero", t("ul-dev-zero", src_id="local", src="in/zero", dst_id="p", dst="/data/zero.bin")),
    (b"ul-fifo", t("ul-fifo", src_id="local", src="in/fifo", dst_id="p", dst="/data/fifo.bin")),
    (b"ul-dir", t("ul-dir", src_id="local", src="in/dir", dst_id="p", dst="/data/dir.bin")),
    (b"ul-abs-etc", t("ul-abs-etc", src_id="local", src="/etc/passwd", dst_id="p", dst="/data/passwd")),
    (b"ul-via-esc", t("ul-via-esc", src_id="local", src="esc/secret.txt", dst_id="p", dst="/data/secret2.txt")),
    (b"remote-crlf", t("remote-crlf", src="/data/a.bin\r\nDELE /data/a.bin", dst="out/crlf.bin")),
    (b"remote-nel", t("remote-nel", src="/data/a.bin\u0085DELE", dst="out/nel.bin")),
    (b"remote-braces", t("remote-braces", src="/data/{path}%s%n.bin", dst="out/braces.bin")),
    (b"remote-dotdot", t("remote-dotdot", src="/../../../etc/passwd", dst="out/rdd.bin")),
    (b"big-exact", big),
    (b"big-plus1", big[:-2] + b'x"}}'),
    (b"badutf8-key", b'{"task_id":"badutf8-key","\xff\xfe":1,"src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/u.bin"}'),
    (b"badutf8-value", b'{"task_id":"badutf8-value","src_id":"p","src_path":"/data/\xc3(.bin","dst_id":"local","dst_path":"out/u.bin"}'),
    (b"overlong-utf8", b'{"task_id":"overlong-utf8","src_id":"p","src_path":"/data/\xc0\xaf.bin","dst_id":"local","dst_path":"out/u.bin"}'),
    (b"lone-surrogate-id", b'{"task_id":"\\ud800","src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/ls.bin"}'),
    (b"nul-id", b'{"task_id":"a\\u0000b","src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/nul.bin"}'),
    (b"task-id-number", b'{"task_id":12,"src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/n.bin"}'),
    (b"empty-line", b""),
    (b"spaces-line", b"   \t "),
    (b"bom-only", b"\xef\xbb\xbf"),
    (b"cr-only", b"\r"),
    (b"conn-id-empty", t("conn-id-empty", src_id="")),
    (b"conn-id-weird", t("conn-id-weird", src_id="p\n[local]")),
    (b"both-forms", b'{"task_id":"both-forms","source":{"connection_id":"p","path":"/data/a.bin"},"src_id":"local","dst_id":"local","dst_path":"out/bf.bin","destination":null}'),
    (b"options-null", t("options-null", dst="out/on.bin", options=None)),
    (b"options-list", t("options-list", dst="out/ol.bin", options=[1, 2])),
    (b"huge-float-exp", b'{"task_id":"huge-float-exp","src_id":"p","src_path":"/data/a.bin","dst_id":"local","dst_path":"out/hf.bin","options":{"retry_count":1e99999}}'),
    (b"neg-zero", t("neg-zero", dst="out/nz.bin", options={"retry_count": -0.0})),
]
path = work / "tasks.jsonl"
path.write_bytes(b"\n".join(l for _, l in lines) + b"\n")
t0 = time.monotonic()
try:
    p = subprocess.run([CLI, "copy", str(path), "--connections", str(ini), "--stats", "0", "-j", "4"],
                       capture_output=True, timeout=60)
    out, err, rc = p.stdout, p.stderr, p.returncode
except subprocess.TimeoutExpired as e:
    out, err, rc = e.stdout or b"", e.stderr or b"", "TIMEOUT(60s)"
print("exit", rc, f"{time.monotonic()-t0:.1f}s", "results", len(out.splitlines()), "for", len(lines), "lines")
results = [json.loads(x) for x in out.splitlines()]
by_line = {}
for r in results:
    msg = r.get("error_message") or ""
    by_line.setdefault(r.get("task_id"), []).append(r)
for name, _ in lines:
    n = name.decode()
    rs = by_line.get(n) or [r for r in results if (r.get("error_message") or "").startswith(f"line {[x for x,_ in lines].index(name)+1}:")]
    if not rs:
        print(f"  {n:20s} NO RESULT")
        continue
    for r in rs:
        print(f"  {n:20s} {r['status']:9s} {str(r.get('error_code')):18s} att={r['attempts']} {(r.get('error_message') or '')[:160]!r}")
names = {n.decode() for n, _ in lines}
for r in results:
    if r.get("task_id") not in names and not (r.get("error_message") or "").startswith("line "):
        print("  other result:", repr(r.get("task_id")), r["status"], r.get("error_code"), r.get("error_message"))
print("stderr traceback:", b"Traceback" in err)
print(err.decode(errors="replace")[-3000:])
print("outside now:", sorted(os.listdir(outside)))
print("server files:", sorted(srv.files))
srv.stop()
