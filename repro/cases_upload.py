"""Upload-path variants (PWD/CWD/MKD/RNTO/STOR replies) through the real CLI."""
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, run, ul  # noqa

F = {"/data/a.bin": A_BIN, "/data/up.bin": b"old"}


def rnto_exists(s, m):
    if m["p"] in s.server.files:
        return "553 File exists."
    return s._cmd_RNTO(m["p"])


cases = [
    Case("U-pwd-unquoted", dict(files=F, rules=[Rule(r"PWD", "257 / is the current directory")]), [ul("in/up.bin", "/new/d/up.bin")]),
    Case("U-pwd-windows", dict(files=F, rules=[Rule(r"PWD", '257 "C:\\ftproot" is current directory.')]), [ul("in/up.bin", "/new/d/up.bin")]),
    Case("U-pwd-doubled-quotes", dict(files=F, rules=[Rule(r"PWD", '257 "/we""ird" is current directory.')]), [ul("in/up.bin", "/new/d/up.bin")]),
    Case("U-cwd-200", dict(files=F, rules=[Rule(r"CWD (?P<p>.*)", lambda s, m: "200 ok" if m["p"] in s.server.dirs or m["p"] == "/" else "550 no")]), [ul("in/up.bin", "/new/d/up.bin")]),
    Case("U-rnto-refuses-existing", dict(files=F, rules=[Rule(r"RNTO (?P<p>.*)", rnto_exists)]), [ul("in/up.bin", "/data/up.bin")]),
    Case("U-stor-532 (AUTH_FAILED is defensible)", dict(files=F, rules=[Rule(r"STOR .*", "532 Need account for storing files.")]), [ul("in/up.bin", "/data/up2.bin")],
         expect={"ul /data/up2.bin": ("failed", "AUTH_FAILED", 1)}),
    Case("U-mkd-exists-521", dict(files=F, rules=[Rule(r"MKD /data", "521 \"/data\" directory already exists")]), [ul("in/up.bin", "/data/sub/up.bin")]),
    Case("U-dotfiles-refused (H3)", dict(rules=[Rule(r"STOR (?P<p>.*/\..*)", "553 Prohibited file name: {p}")]), [ul("in/up.bin", "/data/up.bin")]),
]
if __name__ == "__main__":
    for c in cases:
        run(c)
