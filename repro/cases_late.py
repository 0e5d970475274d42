"""Late probes: CR CR LF endings, a NUL in a reply, an idle 421 that leaves the socket open,
an idle session closed with a proper TLS close_notify on the control connection."""
import os, socket, ssl, sys, time
sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, dl, run, ul  # noqa

F = {"/a.bin": A_BIN, "/b.bin": A_BIN}
seq = [dl("/a.bin", "out/a.bin"), dl("/b.bin", "out/b.bin", retry_count=0)]


def raw(b):
    return lambda s, m: s.sock.sendall(b) and None


def tls_close_idle(s, m):
    # answer this EPSV normally, then after 0.3 s idle: 421 + TLS close_notify + FIN
    reply = s.epsv_reply()
    s.send(reply)
    return None


state = {"n": 0}


def epsv_then_closing(s, m):
    state["n"] += 1
    if state["n"] == 2:  # the pooled session: the server closes it with close_notify first
        s.send("421 Timeout.")
        try:
            s.sock = s.sock.unwrap()  # proper TLS shutdown (close_notify), then FIN
        except (OSError, ssl.SSLError):
            pass
        s.close()
        return None
    return s.epsv_reply()


def quiet_421_keep_open(s, m):
    state["n"] += 1
    if state["n"] == 2:
        return "421 Service not available, closing control connection."  # ...but it does not close
    return s.epsv_reply()


cases = [
    Case("B-crcrlf", dict(files=F, rules=[Rule(r"TYPE I", raw(b"200 Type set to I.\r\r\n"))]), seq),
    Case("B-nul-in-reply", dict(files=F, rules=[Rule(r"TYPE I", raw(b"200 Type\x00 set.\r\n"))]), seq),
    Case("F-421-socket-left-open", dict(files=F, rules=[Rule(r"EPSV", quiet_421_keep_open)]), seq, args=["-j", "1"]),
    Case("F-tls-close-notify-at-checkout", dict(files=F, rules=[Rule(r"EPSV", epsv_then_closing)]), seq, tls=True, args=["-j", "1"]),
]
if __name__ == "__main__":
    for c in cases:
        state["n"] = 0
        run(c)
