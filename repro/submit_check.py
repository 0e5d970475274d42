"""`ftp-pooler submit` as a newcomer: broker down, invalid lines, --results timeout."""
import os, subprocess, sys, tempfile, time, uuid
from pathlib import Path
sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI  # noqa
from servers.kafka import TansuBroker  # noqa
from servers.netutil import free_port  # noqa
from kafka.admin import KafkaAdminClient, NewTopic  # noqa
w = Path(tempfile.mkdtemp(prefix="tester-submit-"))
(w / "t.jsonl").write_text('{"task_id":"a","src_id":"p","src_path":"/x","dst_id":"local","dst_path":"x"}\n{not json\n\n{"task_id":"b"}\n')
(w / "none.yaml").write_text("{}\n")
def sub(env_extra, *args):
    env = dict(os.environ, FTP_POOLER_CONFIG=str(w / "none.yaml"), **env_extra)
    t0 = time.monotonic()
    p = subprocess.run([CLI, "submit", str(w / "t.jsonl"), *args], capture_output=True, text=True, env=env, timeout=120)
    print(f"=== submit {args} {env_extra.get('FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS')}: exit {p.returncode} {time.monotonic()-t0:.1f}s")
    print("   stdout:", p.stdout.strip()[:500]); print("   stderr:", p.stderr.strip()[-600:])
sub({"FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}, "--kafka-timeout", "2")
b = TansuBroker(w / "tansu").start()
try:
    sfx = uuid.uuid4().hex[:6]
    adm = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers)
    adm.create_topics([NewTopic(f"tasks-{sfx}", 1, 1), NewTopic(f"res-{sfx}", 1, 1), NewTopic(f"fail-{sfx}", 1, 1)]); adm.close()
    env = {"FTP_POOLER__KAFKA__BOOTSTRAP_SERVERS": b.bootstrap_servers, "FTP_POOLER__KAFKA__INPUT_TOPIC": f"tasks-{sfx}",
           "FTP_POOLER__KAFKA__RESULT_TOPIC": f"res-{sfx}", "FTP_POOLER__KAFKA__FAIL_TOPIC": f"fail-{sfx}"}
    sub(env)
    sub(env, "--results", "--timeout", "3")
    sub(dict(env, FTP_POOLER__KAFKA__INPUT_TOPIC=f"nonexistent-{sfx}"))
finally:
    b.stop()
