"""The worker with a real broker (Tansu): hostile messages (incl. invalid-UTF-8 Kafka keys,
headers, tombstones), a server that echoes the password (plain and percent-encoded), then
grep results, the worker's log (-v) and /metrics for the password; SIGTERM exit status.
"""
import json, os, signal, subprocess, sys, tempfile, time, urllib.parse, urllib.request, uuid
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, Rule, ScriptedFTPServer  # noqa
from servers.kafka import TansuBroker  # noqa
from servers.netutil import free_port  # noqa
from kafka import KafkaConsumer, KafkaProducer  # noqa
from kafka.admin import KafkaAdminClient, NewTopic  # noqa

PW = "Hunter2-s3cret!"
work = Path(tempfile.mkdtemp(prefix="tester-worker-"))
broker = TansuBroker(work / "tansu").start()
try:
    sfx = uuid.uuid4().hex[:6]
    tasks_t, res_t, fail_t = f"tasks-{sfx}", f"results-{sfx}", f"failures-{sfx}"
    adm = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    adm.create_topics([NewTopic(tasks_t, 2, 1), NewTopic(res_t, 1, 1), NewTopic(fail_t, 1, 1)]); adm.close()
    good = ScriptedFTPServer(files={"/data/a.bin": os.urandom(5000)}, password=PW,
                             rules=[Rule(r"RETR /data/echo.*", lambda s, m: f"550 {s.server.password} not allowed")]).start()
    echo = ScriptedFTPServer(password=PW, rules=[Rule(r"PASS (?P<pw>.*)", lambda s, m: "530 bad password " + urllib.parse.quote(m["pw"]) + " / " + m["pw"])]).start()
    base = work / "base"; base.mkdir()
    pwf = work / "pw"; pwf.write_text(PW)
    ini = work / "c.ini"
    ini.write_text(f"[good]\ntype=ftp\nhost=127.0.0.1\nport={good.port}\nuser=user\npass_file={pwf}\ntimeout=3\n"
                   f"[echo]\ntype=ftp\nhost=127.0.0.1\nport={echo.port}\nuser=user\npass_env=ECHO_PW\ntimeout=3\n"
                   f"[local]\ntype=local\nbase_path={base}\n")
    api = free_port()
    (work / "none.yaml").write_text("{}\n")
    env = dict(os.environ, ECHO_PW=PW, FTP_POOLER_CONNECTIONS=str(ini), FTP_POOLER_CONFIG=str(work / "none.yaml"),
               FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap_servers, FTP_POOLER__KAFKA__INPUT_TOPIC=tasks_t,
               FTP_POOLER__KAFKA__RESULT_TOPIC=res_t, FTP_POOLER__KAFKA__FAIL_TOPIC=fail_t,
               FTP_POOLER__KAFKA__CONSUMER_GROUP=f"g-{sfx}", FTP_POOLER__KAFKA__SESSION_TIMEOUT_MS="2000",
               FTP_POOLER__KAFKA__HEARTBEAT_INTERVAL_MS="500", FTP_POOLER__KAFKA__COMMIT_INTERVAL_SECONDS="0.5",
               FTP_POOLER__API__PORT=str(api), FTP_POOLER__WORKER__NAME="tester",
               FTP_POOLER__TRANSFER__INITIAL_BACKOFF_SECONDS="0.05", FTP_POOLER__TRANSFER__MAX_BACKOFF_SECONDS="0.1")
    log = open(work / "worker.log", "wb")
    w = subprocess.Popen([CLI, "worker", "-vv"], env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{api}/ready", timeout=1).status == 200: break
        except Exception: time.sleep(0.1)
    def t(tid, **kw):
        d = {"task_id": tid, "src_id": "good", "src_path": "/data/a.bin", "dst_id": "local", "dst_path": f"out/{tid}.bin"}
        d.update(kw); return json.dumps(d).encode()
    msgs = [  # (key, value, headers)
        (b"\xff\xfe\xfd", t("badkey"), []),
        (None, t("nokey"), []),
        (b"k", t("hdrs"), [("\u00e9\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), b"\xff\x00")]),
        (b"tomb", None, []),
        (b"empty", b"", []),
        (b"echo-login", t("echo-login", src_id="echo"), []),
        (b"echo-retr", t("echo-retr", src_path="/data/echo.bin", options={"retry_count": 0}), []),
        (b"slashes", t("slashes", dst_path="////"), []),
        (b"winpath", t("winpath", dst_path="C:\\x\\..\\..\\y.bin"), []),
        (b"badutf8", b'{"task_id":"badutf8","\xff":1}', []),
        (b"deep", b'{"task_id":"deep","x":' + b"[" * 3000 + b"]" * 3000 + b"}", []),
        (b"big", b'{"task_id":"big","pad":"' + b"x" * 1_100_000 + b'"}', []),
    ]
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=4 * 1024 * 1024)
    for k, v, h in msgs:
        prod.send(tasks_t, key=k, value=v, headers=h)
    prod.flush(); prod.close()
    cons = KafkaConsumer(res_t, fail_t, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest",
                         group_id=None, consumer_timeout_ms=1000)
    got = []
    deadline = time.time() + 40
    while time.time() < deadline and len(got) < len(msgs):
        for r in cons:
            got.append((r.topic, r.key, json.loads(r.value)))
    cons.close()
    print(f"results: {len(got)} for {len(msgs)} messages")
    for topic, key, r in got:
        print(f"  {topic[:8]:8s} key={key!r:30.30s} {r.get('task_id')!r:14.14s} {r['status']:9s} {r.get('error_code')!s:18s} {(r.get('error_message') or '')[:150]!r}")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=2).read().decode()
    health = urllib.request.urlopen(f"http://127.0.0.1:{api}/health", timeout=2).read().decode()
    w.send_signal(signal.SIGTERM)
    rc = w.wait(60)
    log.close()
    logtext = (work / "worker.log").read_text(errors="replace")
    print("worker exit on SIGTERM:", rc)
    forms = {"plain": PW, "pct": urllib.parse.quote(PW)}
    allres = json.dumps([g[2] for g in got])
    for where, text in (("results", allres), ("log", logtext), ("metrics", metrics), ("health", health)):
        for fn, f in forms.items():
            print(f"  password ({fn}) in {where}: {f in text}")
    print("traceback in log:", "Traceback" in logtext)
    print("log lines:", len(logtext.splitlines()))
    print("log lines with 'error' level:", [l[:300] for l in logtext.splitlines() if '"level": "error"' in l][:5])
    (work / "metrics.txt").write_text(metrics)
    print("workdir", work)
    good.stop(); echo.stop()
finally:
    broker.stop()
