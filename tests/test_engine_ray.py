"""`--engine ray` on a real multi-node Ray cluster on this machine (a head with no CPU, two worker nodes with one CPU
and a small object store each) against a real PostgreSQL, compared with the local path on the same data.

These tests bring their own PostgreSQL (CURATE_TEST_DATABASE_URL, else scripts/test-postgres.sh) and do not use the
`database_url` fixture, so `make test` runs them once, in its first pass, not again in the PostgreSQL pass.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'curate[ray]'")
REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))  # the CLI beside this Python
THREADS = 160  # real conversations; chunks of CHUNK give both workers several, and a node can be lost half-way
CHUNK = 16


@pytest.fixture(scope="module", autouse=True)
def ray_env(ray_home):
    """HOME for every Ray process these tests start (conftest's `ray_home`), and no auth setting from outside."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(ray_home))
        patch.delenv("RAY_AUTH_MODE", raising=False)
        patch.delenv("RAY_AUTH_TOKEN", raising=False)
        yield ray_home


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("CURATE_TEST_DATABASE_URL")
    if not url:
        out = subprocess.run([str(REPO / "scripts" / "test-postgres.sh")], capture_output=True, text=True, check=False)
        url = out.stdout.strip()
    if not url:
        pytest.skip("no PostgreSQL: set CURATE_TEST_DATABASE_URL, or apt-get install -y postgresql for "
                    "scripts/test-postgres.sh")
    return url


@pytest.fixture(scope="module")
def ray_cluster():
    """Started for this module and stopped after it, so that no later test finds Ray already connected."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 << 20})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=80 << 20) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def _schema_url(base: str) -> tuple[str, str]:
    schema = "ray_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    return schema, f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_homes(postgres_url, tmp_path, monkeypatch):
    """Two homes on two fresh schemas of the same server (one for each engine), with the same conversations."""
    made = []

    def make(name: str):
        schema, url = _schema_url(postgres_url)
        made.append(schema)
        return tmp_path / name, url

    yield make
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        for schema in made:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


def _curate(monkeypatch, home, url, *args, code=0):
    from click.testing import CliRunner

    from curation.cli.main import cli

    monkeypatch.setenv("CURATE_HOME", str(home))
    monkeypatch.setenv("CURATE_DATABASE_URL", url)
    monkeypatch.setenv("CURATE_EMBED_CHUNK_SIZE", str(CHUNK))  # the same for both engines, as a user would set it
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert code is None or result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def _json(monkeypatch, home, url, *args):
    out = _curate(monkeypatch, home, url, *args, "--json").stdout
    return orjson.loads(out)  # one document, nothing else on stdout


def _ingest(monkeypatch, home, url, oasst_file, tmp_path):
    """The first THREADS real oasst1 threads, through `curate ingest` as OpenAI-format JSONL."""
    from test_embed import oasst_threads

    subset = tmp_path / f"{home.name}.jsonl"
    subset.write_bytes(b"".join(orjson.dumps({"id": cid, "messages": messages}) + b"\n"
                                for cid, messages in oasst_threads(oasst_file, THREADS)))
    assert _json(monkeypatch, home, url, "ingest", subset, "--format", "openai")["ingested"] == THREADS


def _store(url):
    from curation.store import Store

    return Store.open(url=url, home=None, migrate=False)


def _vectors(url):
    from curation.store.embedding_tables import embeddings

    store = _store(url)
    with store.connect() as conn:
        rows = conn.execute(sa.select(embeddings.c.conversation_id, embeddings.c.vector)).all()
    store.dispose()
    return rows


@pytest.fixture
def pair(pg_homes, monkeypatch, oasst_file, tmp_path, ray_cluster):
    """(local home, url), (ray home, url), both holding the same real conversations."""
    homes = [pg_homes("local"), pg_homes("ray")]
    for home, url in homes:
        _ingest(monkeypatch, home, url, oasst_file, tmp_path)
    return homes


def test_embed_on_ray_matches_local_and_reruns_do_nothing(pair, monkeypatch):
    (local_home, local_url), (ray_home, ray_url) = pair
    local = _json(monkeypatch, local_home, local_url, "embed")
    on_ray = _json(monkeypatch, ray_home, ray_url, "embed", "--engine", "ray")
    assert on_ray["engine"] == "ray" and on_ray["workers"] == 2 and "engine" not in local
    assert on_ray["embedded"] == local["embedded"] > 0 and on_ray["space"] == local["space"]
    a, b = dict(_vectors(local_url)), dict(_vectors(ray_url))
    assert a.keys() == b.keys() and len(a) == local["embedded"]
    cosine = [float(np.dot(np.frombuffer(a[k], "<f4"), np.frombuffer(b[k], "<f4"))) for k in a]
    assert min(cosine) >= 0.9999, min(cosine)
    again = _json(monkeypatch, ray_home, ray_url, "embed", "--engine", "ray")
    assert again["embedded"] == 0 and again["skipped"] == local["embedded"]


def test_reward_and_failure_scores_on_ray_match_local(pair, monkeypatch, tmp_path, oasst_file):
    (local_home, local_url), (ray_home, ray_url) = pair
    model = _tiny_reward_model(tmp_path, oasst_file)
    local = _json(monkeypatch, local_home, local_url, "reward", "score", "--model", model)
    on_ray = _json(monkeypatch, ray_home, ray_url, "reward", "score", "--model", model, "--engine", "ray")
    assert on_ray["scored"] == local["scored"] > 0 and on_ray["skipped"] == local["skipped"]
    assert _rewards(local_url).keys() == _rewards(ray_url).keys()
    a, b = _rewards(local_url), _rewards(ray_url)
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-5
    assert _json(monkeypatch, ray_home, ray_url, "reward", "score", "--model", model, "--engine", "ray")["scored"] == 0

    from curation.signals import score_failures

    scored = [score_failures(_store(url), engine=engine) for url, engine in ((local_url, "local"), (ray_url, "ray"))]
    assert scored[1]["engine"] == "ray" and scored[0]["scored"] == scored[1]["scored"] > 0
    assert {k: scored[0][k] for k in ("failures", "signals")} == {k: scored[1][k] for k in ("failures", "signals")}
    assert _failure_scores(local_url) == _failure_scores(ray_url)
    assert scored[0]["signals"].get("low_reward", 0) > 0  # the rewards and their percentiles were read


def test_sqlite_with_ray_is_a_usage_error(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from curation.cli.main import cli

    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    for args in (["embed"], ["reward", "score"], ["cluster"]):
        result = CliRunner().invoke(cli, [*args, "--engine", "ray", "--json"])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and result.stderr.count("\n") == 1 and "CURATE_DATABASE_URL" in result.stderr
    (tmp_path / "home" / "curate.toml").write_text('[engine]\nkind = "ray"\n')
    assert CliRunner().invoke(cli, ["embed"]).exit_code == 2  # curate.toml [engine] counts too
    monkeypatch.setenv("CURATE_ENGINE_KIND", "local")  # and the environment beats it
    assert CliRunner().invoke(cli, ["embed", "--json"]).exit_code == 0


def test_curate_joins_a_cluster_started_by_the_ray_cli_after_a_local_ray_init(pg_homes, monkeypatch, oasst_file,
                                                                              tmp_path, ray_home):
    """docs/scale.md's recipe on a machine where a local `ray.init()` ran (it wrote HOME/.ray/auth_token): a head and
    one node started by `ray start`, RAY_AUTH_MODE=token on both, and `curate embed --engine ray` on them. Without
    RAY_AUTH_MODE the node is refused, as the issue found; Curate's refusals are one line naming the fix."""
    from annotations.server.settings import free_port

    home, url = pg_homes("cli")
    _ingest(monkeypatch, home, url, oasst_file, tmp_path)
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 characters
    env = {**os.environ, "HOME": str(ray_home)}
    secured = {**env, "RAY_AUTH_MODE": "token"}
    nodes: list[int] = []  # `ray start` ids: each node's processes are in that process group

    def ray_start(*args, node_env=secured):
        out = subprocess.run([RAY, "start", "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
                              "--temp-dir", str(temp / f"n{len(nodes)}"), *args], env=node_env, capture_output=True,
                             text=True, timeout=180, start_new_session=True)
        return out

    try:
        subprocess.run([sys.executable, "-c", "import ray\nray.init(num_cpus=1, include_dashboard=False, "
                        f"_temp_dir={str(temp / 'local')!r})\nray.shutdown()"], env=env, check=True, timeout=180)
        assert (ray_home / ".ray" / "auth_token").is_file()  # what Ray 2.60 leaves behind
        port = free_port()
        head = ray_start("--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard=false",
                         "--dashboard-port", str(free_port()))
        nodes.append(_group_of(temp / "n0"))
        assert head.returncode == 0, head.stderr[-2000:]
        refused = ray_start("--address", f"127.0.0.1:{port}", "--num-cpus", "1", node_env=env)
        nodes.append(_group_of(temp / "n1"))
        assert refused.returncode != 0 and "InvalidAuthToken" in refused.stdout + refused.stderr
        joined = ray_start("--address", f"127.0.0.1:{port}", "--num-cpus", "1")
        nodes.append(_group_of(temp / "n2"))
        assert joined.returncode == 0, joined.stderr[-2000:]

        address = f"127.0.0.1:{port}"
        # first the refusals, while there is work to do (a run with nothing to embed never connects)
        for run_env, args, expected in (
            (env, (), "RAY_AUTH_MODE=token"),  # no token mode: refused, and told how to fix it
            (secured, ("--ray-address", f"127.0.0.1:{free_port()}"), "cannot reach the Ray cluster"),
        ):
            failed = _curate_process(home, url, run_env, "embed", "--engine", "ray",
                                     *(args or ("--ray-address", address)), "--json")
            assert failed.returncode == 1 and failed.stdout == "", failed.stderr[-2000:]
            lines = [line for line in failed.stderr.splitlines() if expected in line]  # Ray's C++ logs its own
            assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
        mismatch = _curate_process(home, url, secured, "embed", "--engine", "ray", "--ray-address", address,
                                   fault="import ray._private.utils as u\nu.compute_version_info = lambda: "
                                         "('2.0.0', '3.9.0')\n")  # an injected fault: another Ray on the driver
        assert mismatch.returncode == 1 and "this process Ray 2.0.0 on Python 3.9.0" in mismatch.stderr, mismatch.stderr
        done = _curate_process(home, url, secured, "embed", "--engine", "ray", "--ray-address", address, "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        out = orjson.loads(done.stdout)
        assert out["workers"] == 1 and out["embedded"] == THREADS  # the head has no CPU: the joined node did it all
        assert _count_vectors(url) == THREADS
    finally:
        _stop_nodes(nodes)
        shutil.rmtree(temp, ignore_errors=True)


def _curate_process(home, url, env, *args, fault: str = ""):
    """`curate ARGS` in its own process (this one may already be connected to the module's Ray cluster)."""
    env = {**env, "CURATE_HOME": str(home), "CURATE_DATABASE_URL": url, "CURATE_EMBED_CHUNK_SIZE": str(CHUNK)}
    return subprocess.run([sys.executable, "-c", f"{fault}from curation.cli.main import main\nmain()", *args],
                          env=env, capture_output=True, text=True, timeout=600)


def _group_of(temp: Path) -> int | None:
    """The process group of the node whose Ray processes run under `temp` (None when none started)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if any(str(temp) in part for part in process.info["cmdline"] or ()):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                return os.getpgid(process.pid)
    return None


def _stop_nodes(groups: list[int | None]) -> None:
    """Stop the nodes these tests started, and only them (`ray stop` would stop every Ray on the machine)."""
    import psutil

    groups = [g for g in groups if g is not None and g != os.getpgid(0)]  # never this test's own group
    found = set()
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) in groups:
                found |= {process, *process.children(recursive=True)}
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(list(found), timeout=30)


def test_a_worker_node_lost_mid_embed_leaves_one_vector_per_conversation(pg_homes, monkeypatch, oasst_file, tmp_path,
                                                                          ray_cluster):
    cluster, workers = ray_cluster
    home, url = pg_homes("killed")
    _ingest(monkeypatch, home, url, oasst_file, tmp_path)
    victim, at_kill = workers[-1], []

    def kill_when_vectors_exist():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _count_vectors(url):
            time.sleep(0.05)
        at_kill.append(_count_vectors(url))
        cluster.remove_node(victim)

    killer = threading.Thread(target=kill_when_vectors_exist)
    killer.start()
    try:
        first = _curate(monkeypatch, home, url, "embed", "--engine", "ray", "--json", code=None)
    finally:
        killer.join()
        workers[-1] = cluster.add_node(num_cpus=1, object_store_memory=80 << 20)
        cluster.wait_for_nodes()
    assert first.exit_code in (0, 1), first.output  # the other worker finishes the lost chunk, or a rerun does
    assert 0 < at_kill[0] < THREADS  # the node was taken away in the middle of the run
    _json(monkeypatch, home, url, "embed", "--engine", "ray")
    ids = [cid for cid, _ in _vectors(url)]
    traffic = _traffic_ids(url)
    assert len(ids) == len(set(ids)) and set(ids) == traffic and len(traffic) > 0


def _tiny_reward_model(tmp_path, oasst_file) -> str:
    """A MiniLM reward model trained for two steps on real oasst1 pairs: real weights to score with, in seconds."""
    from loops.reward import TrainConfig, train
    from loops.reward.devset import oasst_pairs
    from reward_support import TINY

    data = tmp_path / "pairs" / "train.jsonl"
    data.parent.mkdir()
    data.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in oasst_pairs(oasst_file)[:32]))
    train(data.parent, tmp_path / "model", config=TrainConfig(**TINY), progress=False)
    return str(tmp_path / "model")


def _count_vectors(url) -> int:
    try:
        return len(_vectors(url))
    except sa.exc.ProgrammingError:  # the table does not exist yet
        return 0


def _traffic_ids(url) -> set[str]:
    from curation.store.tables import conversations, is_traffic

    store = _store(url)
    with store.connect() as conn:
        ids = set(conn.execute(sa.select(conversations.c.id).where(is_traffic())).scalars())
    store.dispose()
    return ids


def _rewards(url) -> dict[str, float]:
    from curation.store.failure_tables import rewards

    store = _store(url)
    with store.connect() as conn:
        out = dict(conn.execute(sa.select(rewards.c.conversation_id, rewards.c.reward)).all())
    store.dispose()
    return out


def _failure_scores(url) -> dict[str, tuple[float, str]]:
    from curation.store.failure_tables import failure_scores

    store = _store(url)
    with store.connect() as conn:
        out = {cid: (score, signals) for cid, score, signals in conn.execute(
            sa.select(failure_scores.c.conversation_id, failure_scores.c.failure_score, failure_scores.c.signals))}
    store.dispose()
    return out


def test_cluster_streams_its_assignment_on_ray_with_the_local_result(pair, monkeypatch):
    """Past the sample size, `curate cluster --engine ray` assigns the streamed chunks as Ray tasks; the partition
    equals the local thread pool's on the same vectors."""
    partitions = []
    for (home, url), engine in zip(pair, ("local", "ray")):
        _json(monkeypatch, home, url, "embed")
        monkeypatch.setattr("curation.cluster.run.STREAM_CHUNK", 32)  # several chunks from 160 conversations
        out = _json(monkeypatch, home, url, "cluster", "--k", "4", "--sample-size", "60", "--engine", engine)
        assert out["streamed"] and out["sample"] == 60
        if engine == "ray":
            assert out["engine"]["kind"] == "ray" and out["engine"]["assignment_tasks"] >= 2
        else:
            assert "engine" not in out
        partitions.append(_partition(url))
    assert partitions[0] == partitions[1] and len(partitions[0]) == 4


def _partition(url) -> set[frozenset[str]]:
    from curation.store.failure_tables import cluster_assignments

    store = _store(url)
    with store.connect() as conn:
        rows = conn.execute(sa.select(cluster_assignments.c.cluster_id, cluster_assignments.c.conversation_id)).all()
    store.dispose()
    groups: dict = {}
    for cluster_id, cid in rows:
        groups.setdefault(cluster_id, set()).add(cid)
    return {frozenset(g) for g in groups.values()}


def test_a_driver_killed_mid_embed_leaves_one_vector_per_conversation(pg_homes, monkeypatch, oasst_file, tmp_path,
                                                                      ray_cluster):
    """`curate embed --engine ray` in its own process, SIGKILLed once some chunks are written: its actors die with it,
    and the rerun writes exactly the missing vectors."""
    import signal
    import sys

    cluster, _ = ray_cluster
    home, url = pg_homes("driver")
    _ingest(monkeypatch, home, url, oasst_file, tmp_path)
    env = {**os.environ, "CURATE_HOME": str(home), "CURATE_DATABASE_URL": url, "CURATE_EMBED_CHUNK_SIZE": str(CHUNK)}
    driver = subprocess.Popen([sys.executable, "-c", "from curation.cli.main import main; main()", "embed",
                               "--engine", "ray", "--ray-address", cluster.address, "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, at_kill = time.monotonic() + 180, 0
    while time.monotonic() < deadline and driver.poll() is None and not (at_kill := _count_vectors(url)):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    out, err = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, (driver.returncode, out, err)  # killed, not finished
    assert 0 < at_kill < THREADS
    rerun = _json(monkeypatch, home, url, "embed", "--engine", "ray")
    ids = [cid for cid, _ in _vectors(url)]
    traffic = _traffic_ids(url)
    assert len(ids) == len(set(ids)) and set(ids) == traffic and len(traffic) > 0
    assert rerun["embedded"] == len(traffic) - rerun["skipped"] and rerun["skipped"] >= at_kill


def _avx512() -> bool:
    with contextlib.suppress(OSError):
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    return False


# Known, not understood: on a 2-core AMD EPYC with avx512_vnni and avx512_bf16, OpenVINO int8 on one-thread Ray
# workers gave one text a cosine of 0.99981 to its local vector, the same every run, while the same export in one
# process (any batch, one thread or two, no pinning) and in a second process stays at 0.9999999. On AVX2 it passes.
OPENVINO_ON_RAY = pytest.param("openvino", marks=pytest.mark.xfail(
    _avx512(), reason="OpenVINO on Ray differs from local by cosine 2e-4 on AVX-512 CPUs (docs/embedding.md)",
    strict=False))


@pytest.mark.parametrize("backend", ["torch", "onnx", OPENVINO_ON_RAY])
def test_embed_on_ray_gives_each_text_its_local_vector_whatever_the_batch(pair, monkeypatch, backend):
    """Issue 21: a text's vector does not depend on its batch, chunk, engine or threads. Local embeds in batches of 5
    with every core; Ray in batches of 16 on one-thread workers, each given other chunks."""
    (local_home, local_url), (ray_home, ray_url) = pair
    local = _json(monkeypatch, local_home, local_url, "embed", "--backend", backend, "--batch-size", "5")
    on_ray = _json(monkeypatch, ray_home, ray_url, "embed", "--backend", backend, "--engine", "ray")
    assert on_ray["space"] == local["space"] and on_ray["embedded"] == local["embedded"] > 0
    a, b = dict(_vectors(local_url)), dict(_vectors(ray_url))
    assert a.keys() == b.keys()
    cosine = [float(np.dot(np.frombuffer(a[k], "<f4"), np.frombuffer(b[k], "<f4"))) for k in a]
    assert min(cosine) >= 0.9999, (backend, min(cosine))


def test_ray_tasks_assign_as_the_thread_pool_does(ray_cluster):
    """The streamed assignment's Ray executor on this module's cluster (one `ray.init` per test process: a local
    `ray.init()` before it left the cluster's actors unscheduled)."""
    from curation.cluster.stream import RayExecutor, assign_chunk, assign_chunks
    from tests.test_cluster_stream import assert_same_assignment, normalise_rows

    rng = np.random.default_rng(2)
    X = rng.normal(size=(3_000, 16)).astype(np.float32)
    C = normalise_rows(X[:12])
    radius = np.full(12, 0.2, dtype=np.float32)
    parts = [r for _, r in assign_chunks(((s, X[s : s + 500]) for s in range(0, 3_000, 500)), C, radius,
                                         executor=RayExecutor())]
    assert_same_assignment(parts, assign_chunk(C, radius, X))
