"""More probes: SIZE reply shapes on upload verify, what a non-refusal EPSV reply does."""
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, dl, run, ul

F = {"/data/a.bin": A_BIN, "/data/b.bin": A_BIN, "/data/c.bin": A_BIN}
def size_fmt(fmt):
    return [Rule(r"SIZE (?P<p>.*)", lambda s, m: fmt.format(n=len(s.server.files[m['p']])) if m['p'] in s.server.files else "550 no")]
seq = [dl("/data/a.bin", "out/a.bin"), dl("/data/b.bin", "out/b.bin"), dl("/data/c.bin", "out/c.bin")]
cases = [
    Case("ul-size-213-n-bytes", dict(rules=size_fmt("213 {n} bytes")), [ul("in/up.bin", "/data/up.bin", verify_size=True)]),
    Case("ul-size-213-garbage", dict(rules=size_fmt("213 garbage")), [ul("in/up.bin", "/data/up.bin", verify_size=True)]),
    Case("ul-skip-size-213-garbage", dict(rules=size_fmt("213 garbage")), [ul("in/up.bin", "/data/up.bin", if_exists="skip")]),
    Case("ul-size-213-multiline", dict(rules=size_fmt("213-Size follows\n213 {n}")), [ul("in/up.bin", "/data/up.bin", verify_size=True)]),
    Case("dl-then-ul-size-garbage-same-session", dict(files=F, rules=size_fmt("213 garbage"), transfer_replies={"RETR": ("150 Go.", "226 OK")}),
         [dl("/data/a.bin", "out/a.bin", verify_size=True), dl("/data/b.bin", "out/b.bin", retry_count=0)], args=["-j", "1"]),
    Case("epsv-425-once-then-sticky?", dict(files=F, rules=[Rule(r"EPSV", "425 Can't open passive connection.", times=1)]), seq, args=["-j", "1"],
         expect={}),
    Case("epsv-530-then-sticky?", dict(files=F, rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", lambda s, m: setattr(s, 'logged_in', False) or "530 Please log in again.", times=1)]), seq, args=["-j", "1"]),
    Case("epsv-421-once", dict(files=F, rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", lambda s, m: (s.send("421 Too many users."), s.close()) and None, times=1)]), seq, args=["-j", "1"]),
    Case("C-auth-ssl-only", dict(files=F, rules=[Rule(r"AUTH TLS", "504 Unknown AUTH type.")]), [dl("/data/a.bin", "out/a.bin")], tls=True),
    Case("C-prot-p-multiline-200", dict(files=F, rules=[Rule(r"PROT P", lambda s, m: setattr(s, "prot_p", True) or "200-Protection level set\n200 to Private")]), [dl("/data/a.bin", "out/a.bin")], tls=True),
    Case("E-upload-tls-multiline-226", dict(files=F, transfer_replies={"STOR": ("150 Ok.", "226-Transfer complete\n226 0.1 seconds, 1.2 Mbytes per second")}), [ul("in/up.bin", "/data/up.bin")], tls=True),
    Case("A-pasv-port-0", dict(files=F, rules=[Rule(r"EPSV", "500 no"), Rule(r"PASV", "227 Entering Passive Mode (127,0,0,1,0,0)")]), [dl("/data/a.bin", "out/a.bin")],
         expect={"dl /data/a.bin": ("failed", "PROTOCOL_ERROR", 2)}),
    Case("A-pasv-octet-256", dict(files=F, rules=[Rule(r"EPSV", "500 no"), Rule(r"PASV", "227 Entering Passive Mode (127,0,0,1,256,1)")]), [dl("/data/a.bin", "out/a.bin")],
         expect={"dl /data/a.bin": ("failed", "PROTOCOL_ERROR", 2)}),
    Case("B-feat-211-space-lines", dict(files=F, feat="211-Features:\n211 MDTM\n211 SIZE\n211 End"), [dl("/data/a.bin", "out/a.bin", preserve_mtime=True)]),
    Case("G-150-ascii-mode-size", dict(files=F, transfer_replies={"RETR": ("150 Opening ASCII mode data connection for {path} ({size} bytes).", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
]
for c in cases:
    if len(sys.argv) > 1 and not any(a in c.name for a in sys.argv[1:]):
        continue
    run(c)
    srv = c._srv
    print("   passive verbs in order:", [x.split()[0] for x in srv.commands if x.split()[0] in ("EPSV", "PASV")])
