import json, os, time
import pytest
from test_pipeline import config_for, upload, run_tasks, Timeouts  # noqa
from servers.latency_proxy import LatencyProxy

@pytest.mark.parametrize("kind", ["pure-ftpd"])
async def test_probe(make_ftp_server, tmp_path, kind):
    root = tmp_path / "local"
    (root / "in").mkdir(parents=True)
    (root / "in" / "up.bin").write_bytes(os.urandom(256 * 1024))
    server = make_ftp_server(kind, passive_ports=64)
    low, high = server.passive_ports
    transcript = tmp_path / "t.jsonl"
    with LatencyProxy([server.port, *range(low, high + 1)], 0.05, transcript=transcript, control_ports=[server.port]) as proxy:
        config = config_for(server, host=proxy.host, timeouts=Timeouts(connect=5, reply=5, data_stall=5))
        tasks = [upload("in/up.bin", f"/d{i % 4}/up{i}.bin") for i in range(64)]
        t0 = time.monotonic()
        outcomes, f = await run_tasks(root, config, tasks, concurrency=8, sessions=8)
        print("files/s", 64 / (time.monotonic() - t0))
    lines = [json.loads(l) for l in transcript.read_text().splitlines()]
    conn = lines[-1]["conn"]
    t0 = None
    for d in lines:
        if d["conn"] == conn:
            t0 = t0 or d["t"]
            print(f"{(d['t']-t0)*1000:8.1f} {d['dir']} {d['text'][:110]!r}")
    print(outcomes.count(("completed", None, 1)), f.quirks)
    assert 0
