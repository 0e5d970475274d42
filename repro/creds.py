"""Password leaks: a server that echoes the password (plain, percent-encoded, upper-cased,
in a 230 banner, in a 550), passwords with regex metacharacters, a 1-character password;
grep results, logs at -vv (json and console), check-config, check-connection."""
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, Rule, ScriptedFTPServer  # noqa: E402

DATA = os.urandom(1000)
work = Path(tempfile.mkdtemp(prefix="tester-creds-"))
base = work / "base"; base.mkdir()
findings = []


def check(name, pw, rules, expect_login=True, extra_args=()):
    srv = ScriptedFTPServer(files={"/data/a.bin": DATA, "/data/banana.bin": DATA}, password=pw, rules=rules).start()
    ini = work / f"{name}.ini"
    pwfile = work / f"{name}.pw"; pwfile.write_text(pw)
    ini.write_text(f"[p]\ntype=ftp\nhost=127.0.0.1\nport={srv.port}\nuser=user\npass_file={pwfile}\ntimeout=3\n"
                   f"[local]\ntype=local\nbase_path={base}\n")
    tasks = work / f"{name}.jsonl"
    tasks.write_text(json.dumps({"task_id": "t1", "src_id": "p", "src_path": "/data/banana.bin", "dst_id": "local",
                                 "dst_path": f"{name}/banana.bin", "options": {"retry_count": 0}}) + "\n")
    outs = {}
    for fmt in ("json", "console"):
        p = subprocess.run([CLI, "copy", str(tasks), "--connections", str(ini), "--stats", "0", "-vv",
                            "--log-format", fmt, *extra_args], capture_output=True, text=True, timeout=60)
        outs[f"copy-{fmt}"] = p.stdout + p.stderr
        if fmt == "json":
            res = p.stdout.strip()
    p = subprocess.run([CLI, "check-connection", "p", "--path", "/data", "--connections", str(ini), "-vv"],
                       capture_output=True, text=True, timeout=60)
    outs["check-connection"] = p.stdout + p.stderr
    p = subprocess.run([CLI, "check-config", "--connections", str(ini), "-vv"], capture_output=True, text=True, timeout=60)
    outs["check-config"] = p.stdout + p.stderr
    forms = {"plain": pw, "pct": urllib.parse.quote(pw, safe=""), "upper": pw.upper()}
    print(f"=== {name} pw={pw!r}")
    print("   result:", res[:300])
    for where, text in outs.items():
        for fname, form in forms.items():
            if len(pw) > 1 and form in text:
                print(f"   LEAK {fname} form in {where}")
                findings.append((name, where, fname))
        if len(pw) == 1:
            pass
    srv.stop()
    return outs, res


META = "p@ss.*(w)rd[1]+$\\^|{2}"
check("regex-meta-echo", META, [Rule(r"PASS (?P<pw>.*)", "530 Login incorrect for {pw}")])
check("pct-echo", "s3cr3t pw/\u00fc!", [Rule(r"PASS (?P<pw>.*)", lambda s, m: "530 Login incorrect for " + urllib.parse.quote(m["pw"], safe=""))])
check("upper-echo", "hunter2secret", [Rule(r"PASS (?P<pw>.*)", lambda s, m: "530 LOGIN INCORRECT FOR " + m["pw"].upper())])


def ok_banner(s, m):
    s.logged_in = True
    return f"230-Welcome. Your password {m['pw']} expires in 3 days\n230 Logged in."


check("banner-230", "hunter2secret", [Rule(r"PASS (?P<pw>.*)", ok_banner)])
check("retr-550-echo", "hunter2secret", [Rule(r"RETR .*", lambda s, m: f"550 session user:{s.server.password} cannot read file")])
outs, res = check("one-char", "a", [Rule(r"RETR .*", "550 /data/banana.bin: Permission denied")])
print("   one-char result message:", json.loads(res).get("error_message"))
outs, res = check("one-char-echo", "a", [Rule(r"PASS (?P<pw>.*)", "530 Login incorrect for {pw}")])
print("   one-char-echo result message:", json.loads(res).get("error_message"))
outs, res = check("digit-pw", "5", [Rule(r"RETR .*", "550 Failed to open file.")])
print("   digit result message:", json.loads(res).get("error_message"))
outs, res = check("pw-late-unasked", "hunter2secret", [Rule(r"PASS .*", after="230 hunter2secret ok", after_delay=0.1)])
outs, res = check("pw-in-epsv", "hunter2secret", [Rule(r"EPSV", lambda s, m: s.epsv_reply("229 hunter2secret (|||{port}|)"))])
outs, res = check("pw-in-feat", "hunter2secret", [], )
print("FINDINGS", findings)
