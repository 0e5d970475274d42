"""New variants of kinds A-G (not in tests/test_interop.py) through the real CLI."""
import os
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, dl, run, ul  # noqa: E402

F = {"/data/a.bin": A_BIN}
DU = [dl("/data/a.bin", "out/a.bin"), ul("in/up.bin", "/data/up.bin")]


def pasv(fmt):
    return [Rule(r"EPSV", "500 EPSV not understood."), Rule(r"PASV", lambda s, m: s.pasv_reply(fmt))]


def epsv(fmt):
    return [Rule(r"EPSV", lambda s, m: s.epsv_reply(fmt))]


def stor_rst(s, m):
    """Upload over FTPS: read all bytes, then reset the data connection (no close_notify)."""
    conn = s._accept_data("150 Ok to send data.")
    if conn is None:
        return None
    chunks = []
    try:
        while c := conn.recv(65536):
            chunks.append(c)
    except (OSError, ssl.SSLError):
        pass
    raw = conn.unwrap() if False else conn
    socket.socket.setsockopt(raw, socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    socket.socket.close(raw)
    s.server.files[m["p"]] = b"".join(chunks)
    return "226 Transfer complete."


def stor_early_close(s, m):
    """Upload over FTPS: server sends its close_notify+FIN as soon as it has the bytes, before
    the client's close_notify; 226 follows."""
    conn = s._accept_data("150 Ok to send data.")
    if conn is None:
        return None
    chunks = []
    try:
        while c := conn.recv(65536):
            chunks.append(c)
    except (OSError, ssl.SSLError):
        pass
    s.server.files[m["p"]] = b"".join(chunks)
    conn.close()
    return "226 Transfer complete."


def hang(s, m):
    time.sleep(8)
    return None


def relogin_needed(s, m):
    s.logged_in = False
    return "530 Session expired, please log in again."


state = {"n": 0}


def retr_eof_second(s, m):
    state["n"] += 1
    if state["n"] == 2:
        s.close()
        return None
    return s._builtin(m.string) and None


cases = [
    # ---- A: passive replies
    Case("A-pasv-foreign-ip", dict(files=F, rules=pasv("227 Entering Passive Mode (10,9,8,7,{p1},{p2}).")), DU),
    Case("A-pasv-zero-ip", dict(files=F, rules=pasv("227 Entering Passive Mode (0,0,0,0,{p1},{p2})")), DU),
    Case("A-pasv-digits-before-tuple", dict(files=F, rules=pasv("227 Entering Passive Mode v2 from 192.168.0.1 (127,0,0,1,{p1},{p2})")), DU),
    Case("A-pasv-extra-numbers-after", dict(files=F, rules=pasv("227 Entering Passive Mode (127,0,0,1,{p1},{p2}). Timeout 30s (1 2 3)")), DU),
    Case("A-pasv-3digit-zero-padded", dict(files=F, rules=pasv("227 Entering Passive Mode (127,000,000,001,{p1:03d},{p2:03d})")), DU),
    Case("A-pasv-leading-zero-ports", dict(files=F, rules=pasv("227 Entering Passive Mode (127,0,0,1,00{p1},00{p2})")), DU),
    Case("A-epsv-522", dict(files=F, rules=[Rule(r"EPSV", "522 Network protocol not supported, use (1)")]), DU),
    Case("A-epsv-port-in-words", dict(files=F, rules=epsv("229 EPSV ok, port {port}")), DU),
    Case("A-epsv-ipv6-form", dict(files=F, rules=epsv("229 Entering Extended Passive Mode (|2|::1|{port}|)")), DU),
    Case("A-epsv-multiline", dict(files=F, rules=epsv("229-Here you go\n229 Entering Extended Passive Mode (|||{port}|)")), DU),
    Case("A-epsv-trailing-text", dict(files=F, rules=epsv("229 Entering Extended Passive Mode (|||{port}|). Have fun (|||1|)")), DU),
    Case("A-pasv-227-multiline-tuple-in-first", dict(files=F, rules=pasv("227-Entering Passive Mode (127,0,0,1,{p1},{p2})\n227 OK")), DU),
    # ---- B: framing
    Case("B-greeting-bare-code", dict(files=F, greeting="220"), DU),
    Case("B-greeting-unpadded-digits", dict(files=F, greeting="220-Welcome\n150 files waiting for you\n220 Ready"), DU),
    Case("B-230-unpadded-digits", dict(files=F, rules=[Rule(r"PASS .*", lambda s, m: setattr(s, "logged_in", True) or "230-Welcome\n100 MB quota left\n230 Logged in")]), DU,
         ini_extra="timeout = 3\n"),
    Case("B-latin1-150", dict(files={"/data/caf\u00e9.bin": A_BIN}, transfer_replies={"RETR": ("150 Opening data connection for {path} ({size} bytes).", "226 OK")}),
         [dl("/data/caf\u00e9.bin", "out/cafe.bin")]),
    Case("B-huge-banner", dict(files=F, greeting="220-" + "x" * 200_000 + "\n220 Ready"), DU),
    Case("B-feat-tabs-lowercase", dict(files=F, feat="211-Features:\n\tepsv\n\tmdtm\n\tmfmt\n\tsize\n\tutf8\n211 End"),
         [dl("/data/a.bin", "out/a.bin", preserve_mtime=True), ul("in/up.bin", "/data/up.bin", preserve_mtime=True, verify_size=True)]),
    Case("B-feat-single-line-211", dict(files=F, feat="211 no-features"), DU),
    Case("B-lf-only", dict(files=F, rules=[Rule(r"TYPE I", lambda s, m: s.sock.sendall(b"200 Type set\n") and None)]), DU),
    # ---- C: reply codes
    Case("C-user-230-no-pass", dict(files=F, rules=[Rule(r"USER .*", lambda s, m: setattr(s, 'logged_in', True) or "230 No password needed.")]), DU),
    Case("C-pass-202", dict(files=F, rules=[Rule(r"PASS .*", lambda s, m: setattr(s, 'logged_in', True) or "202 Already logged in.")]), DU),
    Case("C-auth-tls-multiline-234", dict(files=F, rules=[Rule(r"AUTH TLS", lambda s, m: s.start_tls("234-Hello\n234 Go ahead"))]), [dl("/data/a.bin", "out/a.bin")], tls=True),
    Case("C-auth-tls-200-then-pbsz-500", dict(files=F, rules=[Rule(r"PBSZ .*", "500 PBSZ not understood.")]), [dl("/data/a.bin", "out/a.bin")], tls=True),
    Case("C-rnto-200", dict(files=F, rules=[Rule(r"RNTO (?P<p>.*)", lambda s, m: s._cmd_RNTO(m['p']) or None)]), DU),
    Case("C-stor-final-250", dict(files=F, transfer_replies={"STOR": ("150 Ok.", "250 Transfer OK.")}), DU),
    Case("C-stor-final-200", dict(files=F, transfer_replies={"STOR": ("150 Ok.", "200 Transfer OK.")}), DU),
    Case("C-stor-125", dict(files=F, transfer_replies={"STOR": ("125 Data connection already open; transfer starting.", "226 OK.")}), DU),
    Case("C-mfmt-253", dict(files=F, rules=[Rule(r"MFMT .*", "253 Date/time changed okay.")]), [ul("in/up.bin", "/data/up.bin", preserve_mtime=True)]),
    Case("C-size-multiline", dict(files=F, rules=[Rule(r"SIZE (?P<p>.*)", lambda s, m: f"213-Size follows\n213 {len(s.server.files[m['p']])}")]),
         [ul("in/up.bin", "/data/up.bin", verify_size=True)]),
    Case("C-quit-no-reply-close", dict(files=F, rules=[Rule(r"QUIT", lambda s, m: s.close())]), DU),
    # ---- D: error classes
    Case("D-mfmt-denied-after-upload", dict(files=F, rules=[Rule(r"MFMT .*", "550 Operation not permitted")]),
         [ul("in/up.bin", "/data/up.bin", preserve_mtime=True)]),
    Case("D-rnto-denied", dict(files=F, rules=[Rule(r"RNTO .*", "553 Permission denied.")]), [ul("in/up.bin", "/data/up.bin", retry_count=0)],
         expect={"ul /data/up.bin": ("failed", "PERMISSION_DENIED", 1)}),
    Case("D-vsftpd-failed-to-open", dict(files=F, rules=[Rule(r"RETR .*", "550 Failed to open file.")]), [dl("/data/a.bin", "out/a.bin")],
         expect={"dl /data/a.bin": ("failed", "FILE_NOT_FOUND", 1)}),
    Case("D-450-busy", dict(files=F, rules=[Rule(r"RETR .*", "450 File busy, try later.", times=1)]), [dl("/data/a.bin", "out/a.bin")],
         expect={"dl /data/a.bin": ("completed", None, 2)}),
    Case("D-452-no-space", dict(files=F, rules=[Rule(r"STOR .*", "452 Insufficient storage space.")]), [ul("in/up.bin", "/data/up.bin", retry_count=1)],
         expect={"ul /data/up.bin": ("failed", "TRANSIENT", 2)}),
    Case("D-552-quota", dict(files=F, rules=[Rule(r"STOR .*", "552 Quota exceeded.")]), [ul("in/up.bin", "/data/up.bin")],
         expect={"ul /data/up.bin": ("failed", "PERMANENT", 1)}),
    Case("D-mdtm-gone-after-retr", dict(files=F, rules=[Rule(r"MDTM .*", "550 /data/a.bin: No such file or directory")]),
         [dl("/data/a.bin", "out/a.bin", preserve_mtime=True)]),
    Case("D-530-mid-session", dict(files=F, rules=[Rule(r"RETR .*", "530 Not logged in.", times=1)]), [dl("/data/a.bin", "out/a.bin")],
         expect={"dl /data/a.bin": ("completed", None, 2)}),
    # ---- E: TLS endings
    Case("E-upload-rst-after-bytes", dict(files=F, rules=[Rule(r"STOR (?P<p>.*)", stor_rst)]), [ul("in/up.bin", "/data/up.bin", retry_count=0)], tls=True),
    Case("E-upload-server-closes-first", dict(files=F, rules=[Rule(r"STOR (?P<p>.*)", stor_early_close)]), [ul("in/up.bin", "/data/up.bin", retry_count=0)], tls=True),
    Case("E-download-ragged-no-size-anywhere-but-226", dict(files=F, close_notify=False, transfer_replies={"RETR": ("150 Go.", "226 Done.")},
         rules=[Rule(r"SIZE .*", "550 SIZE not allowed.")]), [dl("/data/a.bin", "out/a.bin", retry_count=0)], tls=True,
         expect={"dl /data/a.bin": ("failed", "TLS_ERROR", 1)}),
    Case("E-download-ragged-verify-size", dict(files=F, close_notify=False), [dl("/data/a.bin", "out/a.bin", verify_size=True)], tls=True),
    # ---- F: stale sessions
    Case("F-idle-221", dict(files={"/a.bin": A_BIN, "/b.bin": A_BIN}, idle_timeout=0.5, idle_timeout_reply="221 Goodbye."),
         [dl("/a.bin", "out/a.bin"), dl("/nonexist-pause.bin", "out/x.bin", retry_count=0), dl("/b.bin", "out/b.bin", retry_count=0)],
         args=["--concurrency", "1"], expect={"dl /nonexist-pause.bin": ("failed", "FILE_NOT_FOUND", 1)}),
    Case("F-idle-multiline-421", dict(files={"/a.bin": A_BIN, "/b.bin": A_BIN}, idle_timeout=0.3, idle_timeout_reply="421-Idle too long\n421 Bye."),
         [dl("/a.bin", "out/a.bin"), dl("/b.bin", "out/b.bin", retry_count=0)], args=["--concurrency", "1"]),
    Case("F-530-expired-at-epsv", dict(files={"/a.bin": A_BIN, "/b.bin": A_BIN}, rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", relogin_needed, times=1)]),
         [dl("/a.bin", "out/a.bin"), dl("/b.bin", "out/b.bin", retry_count=0)], args=["--concurrency", "1"]),
    Case("F-hang-at-second-epsv", dict(files={"/a.bin": A_BIN, "/b.bin": A_BIN}, rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", hang, times=1)]),
         [dl("/a.bin", "out/a.bin"), dl("/b.bin", "out/b.bin", retry_count=0)], args=["--concurrency", "1"], ini_extra="timeout = 2\n"),
    Case("F-eof-at-second-retr", dict(files={"/a.bin": A_BIN, "/b.bin": A_BIN}, rules=[Rule(r"RETR .*", times=1), Rule(r"RETR .*", lambda s, m: s.close(), times=1)]),
         [dl("/a.bin", "out/a.bin"), dl("/b.bin", "out/b.bin", retry_count=0)], args=["--concurrency", "1"]),
    Case("F-idle-upload", dict(files=F, lazy_idle_timeout=0.3),
         [ul("in/up.bin", "/data/up.bin"), dl("/data/a.bin", "out/a.bin", retry_count=0)], args=["--concurrency", "1"]),
    # ---- G: sizes in text
    Case("G-capital-Bytes", dict(files=F, transfer_replies={"RETR": ("150 Opening BINARY mode data connection for {path} ({size} Bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-thousands-sep", dict(files=F, transfer_replies={"RETR": ("150 Opening BINARY mode data connection for {path} (300,000 bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-kbytes", dict(files=F, transfer_replies={"RETR": ("150 Opening data connection for {path} (293 kbytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-negative", dict(files=F, transfer_replies={"RETR": ("150 Opening data connection for {path} (-1 bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-huge", dict(files=F, transfer_replies={"RETR": ("150 Opening data connection for {path} (99999999999999999999999999 bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-size-then-mode", dict(files=F, transfer_replies={"RETR": ("150 Opening data connection for {path} ({size} bytes) (binary)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-multiline-150-two-sizes", dict(files=F, transfer_replies={"RETR": ("150-Old copy was (5 bytes)\n150 Opening for {path} ({size} bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-no-space", dict(files=F, transfer_replies={"RETR": ("150 Opening for {path} ({size}bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-size-eq", dict(files=F, transfer_replies={"RETR": ("150 Opening for {path}, size={size}", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
    Case("G-wrong-announce-5-size-ok", dict(files=F, transfer_replies={"RETR": ("150 Opening for {path} (5 bytes)", "226 OK")}), [dl("/data/a.bin", "out/a.bin")]),
]

if __name__ == "__main__":
    only = sys.argv[1:]
    summary = {}
    for c in cases:
        if only and not any(o in c.name for o in only):
            continue
        state["n"] = 0
        try:
            ok, _, _ = run(c)
        except Exception as e:  # harness problem
            print("  HARNESS ERROR", c.name, repr(e))
            ok = None
        summary[c.name] = ok
    print("\nSUMMARY")
    for k, v in summary.items():
        print(f"  {'PASS' if v else 'FAIL' if v is False else 'ERR '} {k}")
