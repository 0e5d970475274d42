import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, dl, run, ul
from cases_new import F, DU, pasv

def size_ml(s, m):
    data = s.server.files.get(m['p'])
    print("    [server] SIZE for", m['p'], "known:", data is not None, flush=True)
    return f"213-Size follows\n213 {len(data) if data is not None else 0}"

def pass_ml(s, m):
    s.logged_in = True
    return "230-Welcome\n100 MB quota left\n230 Logged in"

cases = [
    Case("A-pasv-3digit-zero-padded", dict(files=F, rules=pasv("227 Entering Passive Mode (127,000,000,001,{p1:03d},{p2:03d})")), DU),
    Case("B-230-unpadded-digits", dict(files=F, rules=[Rule(r"PASS .*", pass_ml)]), DU),
    Case("C-size-multiline", dict(files=F, rules=[Rule(r"SIZE (?P<p>.*)", size_ml)]), [ul("in/up.bin", "/data/up.bin", verify_size=True)]),
    Case("C-size-multiline-download", dict(files=F, transfer_replies={"RETR": ("150 Go.", "226 OK")}, rules=[Rule(r"SIZE (?P<p>.*)", size_ml)]), [dl("/data/a.bin", "out/a.bin", verify_size=True)]),
]
for c in cases:
    if len(sys.argv) > 1 and not any(a in c.name for a in sys.argv[1:]):
        continue
    run(c, verbose="-v" in sys.argv)
