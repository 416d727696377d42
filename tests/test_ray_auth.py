"""Ray never runs unauthenticated: token helpers (fast), a local run's cluster refusing a client
without the token and accepting one with it, and private token and session files (slow)."""

import json
import os
import stat
import subprocess
import sys

import pytest

from bench.harness import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty $HOME and no Ray auth variables."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for k in RAY_ENV:
        monkeypatch.delenv(k, raising=False)
    return h


def _clean_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


def test_token_source_follows_rays_order(home, tmp_path, monkeypatch):
    assert cluster.token_source() is None
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("a" * 64)
    assert cluster.token_source() == str(home / ".ray" / "auth_token")
    f = tmp_path / "tok"
    f.write_text("b" * 64)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(f))
    assert cluster.token_source() == str(f)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "c" * 64)
    assert cluster.token_source() == "RAY_AUTH_TOKEN"


def test_token_path_that_is_empty_or_missing_is_an_error(home, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    with pytest.raises(ValueError, match="RAY_AUTH_TOKEN_PATH=.*none is not a readable file"):
        cluster.token_source()
    with pytest.raises(ValueError, match="--address h:1: RAY_AUTH_TOKEN_PATH"):
        cluster.check_address_token("h:1")


def test_address_without_token_says_how_to_provide_it(home):
    with pytest.raises(ValueError, match=r"--address head:6379: .*RAY_AUTH_TOKEN=.*ray get-auth-token") as e:
        cluster.check_address_token("head:6379")
    assert "\n" not in str(e.value)


def test_local_run_creates_a_private_token_and_forces_token_mode(home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    kw = cluster.prepare_ray_auth(None)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    tok = home / ".ray" / "auth_token"
    assert len(tok.read_text()) == 64 and int(tok.read_text(), 16) > 0
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".ray").stat().st_mode) == 0o700
    base = os.path.dirname(kw["_temp_dir"])
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700 and os.stat(base).st_uid == os.getuid()
    # the same token is reused, and a loose one is tightened
    os.chmod(tok, 0o644)
    before = tok.read_text()
    cluster.prepare_ray_auth(None)
    assert tok.read_text() == before and stat.S_IMODE(tok.stat().st_mode) == 0o600


def test_address_run_needs_token_and_never_creates_one(home):
    with pytest.raises(ValueError, match="--address 10.0.0.1:6379"):
        cluster.prepare_ray_auth("10.0.0.1:6379")
    assert not (home / ".ray").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory owned by someone else")
def test_private_temp_dir_refuses_a_foreign_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    d = tmp_path / f"facefill-ray-{os.getuid()}"
    d.mkdir(mode=0o777)
    os.chown(d, 65534, 65534)
    with pytest.raises(RuntimeError, match="not a directory owned by uid"):
        cluster.private_temp_dir()


def test_cli_address_without_token_stops_before_work(home, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bench.run", "--address", "127.0.0.1:9", "--methods", "mean", "--masks", "centre"]
    r = subprocess.run(cmd + ["--n-images", "1", "--out", str(out)], cwd=ROOT, env=_clean_env(home),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "--address 127.0.0.1:9" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert not out.exists()


DRIVER = """
import json, os, sys
from bench.harness.execute import init_ray
from bench.harness.config import BenchConfig
import ray
init_ray(BenchConfig(), 1, 0, False)
assert ray.get(ray.remote(lambda: 1 + 1).remote()) == 2
node = ray._private.worker._global_node
print(json.dumps({"gcs": node.gcs_address, "session": node.get_session_dir_path()}), flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner could open ``path``: every directory above it must
    let group or others through (x), and the path itself must be group/other readable."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i])).st_mode & 0o011:
            return False
    return bool(os.stat(path).st_mode & 0o044)


@pytest.mark.slow
def test_local_cluster_refuses_clients_without_the_token(home):
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    p = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=ROOT, env=_clean_env(home), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = p.stdout.readline()
        assert line, "the driver did not start Ray"
        info = json.loads(line)
        token = (home / ".ray" / "auth_token").read_text().strip()
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(info["gcs"]))

        def call(md):
            return stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=md, timeout=20)

        for md in (None, [("authorization", "Bearer " + "0" * 64)]):
            with pytest.raises(grpc.RpcError) as e:
                call(md)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(call([("authorization", "Bearer " + token)]).node_info_list) == 1
        # token and session files: nobody but this user can read them
        tok = home / ".ray" / "auth_token"
        assert stat.S_IMODE(tok.stat().st_mode) == 0o600
        assert info["session"].startswith(os.path.dirname(cluster.private_temp_dir()) + os.sep)
        for sub in ("", "logs", "sockets/raylet"):
            assert not _reachable_by_others(os.path.join(info["session"], sub)), sub
    finally:
        p.stdin.close()
        p.wait(timeout=120)
    assert p.returncode == 0
