"""Past one machine: a two-node Ray cluster on this host (a head and a second node started with
``ray start``, token authentication, one CPU each), ``bench.harness.run --address`` on it, units on both
nodes, records equal to an in-process run's. The commands are the README's cluster recipe; on
one host the two nodes also need their own ports and temp dirs, and ``--block`` lets the test
stop exactly the processes it started (``ray stop`` would stop every Ray on the machine)."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from bench.harness.cluster import private_temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
ARGS = ["--methods", "telea,mean,ce", "--masks", "centre,left", "--n-images", "4", "--no-progress"]
VOLATILE = {"seconds", "device", "node_id"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first found first."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _nodes(gcs: str, token: str) -> list[str]:
    """Ids (hex) of the cluster's alive nodes, asked of the GCS with the token."""
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(gcs))
    reply = stub.GetAllNodeInfo(
        gcs_service_pb2.GetAllNodeInfoRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10
    )
    return [n.node_id.hex() for n in reply.node_info_list if n.state == gcs_pb2.GcsNodeInfo.ALIVE]


def _quality(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "records.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in f if line.strip()]


class TwoNodes:
    """The README recipe on one host: token, then ``ray start --head`` and ``ray start --address``."""

    def __init__(self, home: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env = {**env, "HOME": home, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # fmt: skip
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.tmp = tempfile.mkdtemp(prefix="c", dir=os.path.dirname(private_temp_dir()))  # 0700, short paths

    def start(self) -> None:
        # recipe: a token only you can read
        subprocess.run(f"(umask 077 && {RAY} get-auth-token --generate >/dev/null)", shell=True, env=self.env,
                       check=True, capture_output=True)  # fmt: skip
        self.token = open(os.path.join(self.env["HOME"], ".ray", "auth_token")).read().strip()
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--object-store-memory", "200000000"]
        one_host = ["--min-worker-port", "0", "--max-worker-port", "0", "--block"]
        head = [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                "--ray-client-server-port", str(_free_port())]  # fmt: skip
        node = [RAY, "start", "--address", self.address]
        for i, cmd in enumerate((head, node)):
            tmp = os.path.join(self.tmp, f"n{i}")
            cmd = cmd + common + ["--temp-dir", tmp, "--dashboard-agent-listen-port", str(_free_port()), *one_host]
            log = open(os.path.join(self.tmp, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))
            self.wait_nodes(i + 1)

    def wait_nodes(self, n: int, timeout: float = 180) -> list[str]:
        end = time.monotonic() + timeout
        while True:
            try:
                ids = _nodes(self.address, self.token)
                if len(ids) >= n:
                    return ids
            except Exception:  # noqa: BLE001  (GCS not up yet)
                pass
            dead = [p.args[:3] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError(f"cluster did not reach {n} node(s): exited {dead}; logs in {self.tmp}")
            time.sleep(1)

    def stop(self) -> None:
        """SIGTERM to each ``ray start --block`` (it stops its node), then SIGKILL whatever of
        theirs is left, by pid."""
        tree = {p.pid: _descendants(p.pid) for p in self.procs}
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pids in tree.values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.slow
def test_two_node_cluster_runs_units_on_both_and_matches_local(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    threads = max(1, (os.cpu_count() or 1) // 2)  # what each of the 2 Ray workers uses
    local = str(tmp_path / "local")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-m", "bench.run", *ARGS, "--workers", "0", "--out", local], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]

    c = TwoNodes(str(home))
    try:
        c.start()
        tok = home / ".ray" / "auth_token"
        assert stat.S_IMODE(tok.stat().st_mode) == 0o600  # the recipe's token is private
        nodes = c.wait_nodes(2)
        out = str(tmp_path / "cluster")
        cmd = [sys.executable, "-m", "bench.run", *ARGS, "--address", c.address, "--workers", "2", "--out", out]
        r = subprocess.run(cmd, cwd=ROOT, env=c.env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        c.stop()
    with open(os.path.join(out, "records.jsonl")) as f:
        used = {json.loads(line)["node_id"] for line in f if line.strip()}
    assert used == set(nodes), (used, nodes)  # units ran on both nodes
    assert _quality(out) == _quality(local)
