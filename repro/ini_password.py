"""What password reaches the server for INI `pass =` values with %, #, ;, quotes, spaces."""
import os, subprocess, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, ScriptedFTPServer  # noqa
srv = ScriptedFTPServer(files={"/data/a.bin": b"x"}).start()
work = Path(tempfile.mkdtemp(prefix="tester-ini-"))
for pw in ["100%sure", "abc #def", "abc;def", "abc ;def", "%(user)s", " spaced ", '"quoted"', "%%", "a=b"]:
    srv.commands.clear()
    ini = work / "c.ini"
    ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass = {pw}\ntimeout=3\n[local]\ntype=local\nbase_path=/tmp\n")
    p = subprocess.run([CLI, "check-connection", "p", "--connections", str(ini)], capture_output=True, text=True, timeout=30)
    sent = [c for c in srv.commands if c.startswith("PASS")]
    print(f"ini value {pw!r:14} -> sent {sent!r:24} exit {p.returncode} {p.stderr.strip().splitlines()[-1][:150] if p.stderr.strip() else ''}")
srv.stop()
