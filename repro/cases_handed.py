"""Every CASES.md case (A1..G1, F1 on the scripted idle server) through the real CLI."""
import os
import sys
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, dl, run, ul  # noqa: E402

B1_FEAT = "211-Features:\n211-EPSV\n211-MDTM\n211-MFMT\n211-REST STREAM\n211-SIZE\n211-UTF8\n211 End"
IMG = os.urandom(300_000)
INV = os.urandom(200_000)
cases = [
    Case("A1", dict(files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", lambda s, m: s.pasv_reply())]),
         [dl("/data/a.bin", "out/a.bin"), ul("in/up.bin", "/data/up.bin")]),
    Case("A2", dict(files={"/data/a.bin": A_BIN}, rules=[Rule(r"EPSV", "229 Entering Extended Passive Mode (||38835|)")]),
         [dl("/data/a.bin", "out/a.bin"), ul("in/up.bin", "/data/up.bin")]),
    Case("B1", dict(files={"/data/a.bin": A_BIN}, feat=B1_FEAT),
         [dl("/data/a.bin", "out/a.bin", preserve_mtime=True),
          ul("in/up.bin", "/data/up.bin", preserve_mtime=True, verify_size=True)]),
    Case("B2", dict(transfer_replies={"STOR": ("553-\n553- Directory excluded (precheck).\n150 Opening BINARY mode data connection for {name}.", "226 Transfer complete.")}),
         [ul("in/up.bin", "/data/up.bin", retry_count=1)]),
    Case("C1", dict(files={"/data/a.bin": A_BIN}, rules=[Rule(r"AUTH TLS", lambda s, m: s.start_tls("200 AUTH command ok; starting SSL connection..."))]),
         [dl("/data/a.bin", "out/a.bin")], tls=True),
    Case("D1", dict(files={"/data/1_0_7.image": IMG}, rules=[Rule(r"MDTM /data/1_0_7\.image", "550 1_0_7.image: Operation not permitted")]),
         [dl("/data/1_0_7.image", "out/1_0_7.image", preserve_mtime=True)]),
    Case("E1", dict(files={"/data/a.bin": A_BIN, "/data/empty.bin": b""}, close_notify=False),
         [dl("/data/a.bin", "out/a.bin"), dl("/data/empty.bin", "out/empty.bin")], tls=True),
    Case("G1", dict(files={"/data/invoice (5 bytes).csv": INV}),
         [dl("/data/invoice (5 bytes).csv", "out/invoice.csv")]),
]
if __name__ == "__main__":
    res = {}
    for c in cases:
        ok, results, err = run(c)
        res[c.name] = ok
        if c.name == "B1":
            srv = c._srv
            print("  B1 server mtime of upload:", srv.mtimes.get("/data/up.bin"), "SIZE cmds:",
                  [x for x in srv.commands if x.startswith("SIZE")], "OPTS:", [x for x in srv.commands if x.startswith("OPTS")])
            p = c._work / "local/out/a.bin"
            print("  B1 local mtime:", datetime.fromtimestamp(p.stat().st_mtime, UTC) if p.exists() else None)
        if c.name == "D1":
            print("  D1 RETR count:", sum(1 for x in c._srv.commands if x.startswith("RETR")))
    print(res)
