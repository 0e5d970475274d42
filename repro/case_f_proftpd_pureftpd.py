"""Kind F on other real servers through the CLI: proftpd TimeoutIdle 2 (421 then close) and
TimeoutNoTransfer 2; --concurrency 1: a download, a 4-second task elsewhere, a download with
retry_count 0, one with default retries."""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, A_BIN, UP_BIN, Rule, ScriptedFTPServer, dl  # noqa
from servers.proftpd import ProFTPD  # noqa

def scenario(name, extra, tls=False):
    work = Path(tempfile.mkdtemp(prefix=f"tester-{name}-")); os.chmod(work, 0o755)
    root = work / "root"; root.mkdir(); os.chmod(root, 0o777)
    for n in ("one", "two", "three"):
        (root / f"{n}.bin").write_bytes(A_BIN)
    (work / "pd").mkdir()
    srv = ProFTPD(root, work / "pd", extra_config=extra)
    info = srv.start().info()
    slow = ScriptedFTPServer(files={"/slow.bin": UP_BIN}, rules=[Rule(r"RETR .*", delay=4)]).start()
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
    print(f"=== {name}: exit {p.returncode} {time.monotonic()-t0:.1f}s")
    for line in p.stdout.splitlines():
        r = json.loads(line); print("  ", r["task_id"], r["status"], r.get("error_code"), r["attempts"], r.get("error_message"))
    print("  ", p.stderr.strip().splitlines()[-1])
    slow.stop(); srv.stop()

scenario("proftpd-TimeoutIdle2", ["TimeoutIdle 2"])
scenario("proftpd-TimeoutNoTransfer2", ["TimeoutNoTransfer 2"])
