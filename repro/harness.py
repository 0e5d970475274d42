"""Run a scripted-server case through the real `ftp-pooler copy` CLI (a subprocess).

Usage from a case script::

    from harness import Case, run
    run(Case("A1", server=dict(files=..., rules=[...]), tasks=[...]))

Prints: case name, exit code, each result line (status, code, attempts, message),
bytes on disk / on the server compared with the expected payloads, and the
server's command count per verb.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from scripted_server import Rule, ScriptedFTPServer  # noqa: E402
from servers.certs import make_certs  # noqa: E402

CLI = str(ROOT / ".venv" / "bin" / "ftp-pooler")
A_BIN = os.urandom(300_000)
UP_BIN = os.urandom(120_000)
_CERTS = None


def certs():
    global _CERTS
    if _CERTS is None:
        _CERTS = make_certs(Path(tempfile.mkdtemp(prefix="tester-certs-")))
    return _CERTS


def dl(remote, local, conn="partner", **options):
    return {"task_id": f"dl {remote}", "src_id": conn, "src_path": remote,
            "dst_id": "local", "dst_path": local, "options": options}


def ul(local, remote, conn="partner", **options):
    return {"task_id": f"ul {remote}", "src_id": "local", "src_path": local,
            "dst_id": conn, "dst_path": remote, "options": options}


@dataclass
class Case:
    name: str
    server: dict[str, Any]
    tasks: list[dict[str, Any]]
    tls: bool = False
    ini_extra: str = "timeout = 3\n"
    expect: dict[str, Any] = field(default_factory=dict)  # task_id -> (status, code, attempts)
    args: list[str] = field(default_factory=list)
    local_files: dict[str, bytes] = field(default_factory=lambda: {"in/up.bin": UP_BIN})
    password: str = "secret"


def run(case: Case, verbose: bool = False) -> tuple[bool, list[dict[str, Any]], str]:
    kwargs = dict(case.server)
    kwargs.setdefault("password", case.password)
    srv = ScriptedFTPServer(certs=certs() if case.tls else None, **kwargs).start()
    work = Path(tempfile.mkdtemp(prefix=f"tester-{case.name}-"))
    local = work / "local"
    for rel, data in case.local_files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    local.mkdir(exist_ok=True)
    ini = work / "connections.ini"
    tls = "tls = explicit\n" f"ca_file = {srv.ca_file}\n" if case.tls else ""
    ini.write_text(
        f"[partner]\ntype = ftp\nhost = 127.0.0.1\nport = {srv.port}\nuser = user\n"
        f"pass = {case.password}\n{tls}{case.ini_extra}\n[local]\ntype = local\nbase_path = {local}\n"
    )
    tasks = work / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in case.tasks))
    env = dict(os.environ, FTP_POOLER__TRANSFER__INITIAL_BACKOFF_SECONDS="0.05",
               FTP_POOLER__TRANSFER__MAX_BACKOFF_SECONDS="0.2")
    t0 = time.monotonic()
    proc = subprocess.run([CLI, "copy", str(tasks), "--connections", str(ini), "--stats", "0",
                           *case.args], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    srv.stop()
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    ok = True
    print(f"=== {case.name}  exit={proc.returncode}  {elapsed:.1f}s  sessions={srv.sessions}")
    for r in results:
        got = (r["status"], r.get("error_code"), r.get("attempts"))
        want = case.expect.get(r["task_id"], ("completed", None, 1))
        mark = "ok " if got == tuple(want) else "BAD"
        ok &= got == tuple(want)
        print(f"  [{mark}] {r['task_id']}: {got} {r.get('error_message') or ''}"[:400])
    if len(results) != len(case.tasks):
        ok = False
        print(f"  [BAD] {len(results)} results for {len(case.tasks)} tasks")
    # bytes
    for t in case.tasks:
        res = next((r for r in results if r["task_id"] == t["task_id"]), None)
        if res is None or res["status"] != "completed":
            continue
        if t["dst_id"] == "local":
            want = srv.files.get(t["src_path"])
            have = (local / t["dst_path"]).read_bytes() if (local / t["dst_path"]).exists() else None
        else:
            want = (local / t["src_path"]).read_bytes()
            have = srv.files.get(t["dst_path"])
        same = want == have
        ok &= same
        print(f"  bytes {t['dst_path']}: {'same' if same else 'DIFFERENT'}"
              f" ({None if have is None else len(have)} vs {None if want is None else len(want)})")
    verbs = Counter(c.split(" ", 1)[0].upper() for c in srv.commands)
    print("  verbs:", dict(verbs))
    if verbose or proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
        print("  stderr:", proc.stderr[-3000:])
    print("  =>", "PASS" if ok else "FAIL")
    case._srv = srv  # type: ignore[attr-defined]
    case._proc = proc  # type: ignore[attr-defined]
    case._work = work  # type: ignore[attr-defined]
    return ok, results, proc.stderr
