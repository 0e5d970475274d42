"""A pooled session whose login the server dropped (530 at the next command, e.g. after a
server-side re-authentication timeout) is handed back to the pool: every later task on it
fails AUTH_FAILED, not retryable.  --concurrency 1, 8 downloads, the server drops the
login once, at the 2nd EPSV."""
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import A_BIN, Case, Rule, dl, run

def drop_login(s, m):
    s.logged_in = False
    return "530 Please log in again."

files = {f"/data/f{i}.bin": A_BIN for i in range(8)}
c = Case("530-poisons-pool", dict(files=files, rules=[Rule(r"EPSV", times=1), Rule(r"EPSV", drop_login, times=1)]),
         [dl(p, f"out/f{i}.bin") for i, p in enumerate(files)], args=["-j", "1"])
ok, results, _ = run(c)
print("failed AUTH_FAILED:", sum(1 for r in results if r.get("error_code") == "AUTH_FAILED"), "of", len(results))
print("sessions opened:", c._srv.sessions)
sys.exit(0 if ok else 1)
