"""Settings resolution (curation.config.layered): defaults < curate.toml < environment < options, same everywhere."""
from __future__ import annotations

import pytest

from annotations.server.settings import ServerSettings
from curation.config import IngestSettings, LabellerSettings
from curation.embed.run import EmbedSettings
from curation.errors import ConfigError
from curation.store import Store


def test_file_then_environment_then_options(tmp_path, monkeypatch):
    (tmp_path / "curate.toml").write_text('[ingest]\nbatch_size = 500\nmax_messages = 9\n[embed]\nview = "thread"\n'
                                          '[annotate.server]\nport = 7001\n')
    monkeypatch.setenv("CURATE_INGEST_BATCH_SIZE", "700")
    monkeypatch.setenv("CURATE_INGEST_MAX_CHARS", "")  # empty: unset, the default stays
    ingest = IngestSettings.resolve(tmp_path, max_messages=None, workers=3)
    assert (ingest.batch_size, ingest.max_messages, ingest.max_chars, ingest.workers) == (700, 9, 500_000, 3)

    monkeypatch.setenv("CURATE_EMBED_BATCH_SIZE", "8")
    embed = EmbedSettings.resolve(Store.open(tmp_path), view=None, chunk_size=64)
    assert (embed.view, embed.batch_size, embed.chunk_size) == ("thread", 8, 64)
    assert ServerSettings.resolve(tmp_path).port == 7001
    assert LabellerSettings.resolve(tmp_path).kind == "ctfidf"


@pytest.mark.parametrize(("toml", "message"), [
    ("[ingest]\nbatch = 5\n", "curate.toml [ingest]: unknown key 'batch'"),
    ("[embed]\nbackends = 'onnx'\n", "curate.toml [embed]: unknown key 'backends'"),
    ("[annotate.server]\nprot = 1\n", "curate.toml [annotate.server]: unknown key 'prot'"),
    ("[cluster.labeller]\nendpoint = 'x'\n", "curate.toml [cluster.labeller]: unknown key 'endpoint'"),
])
def test_an_unknown_key_names_its_section(tmp_path, toml, message):
    (tmp_path / "curate.toml").write_text(toml)
    resolvers = [lambda: IngestSettings.resolve(tmp_path), lambda: EmbedSettings.resolve(Store.open(tmp_path)),
                 lambda: ServerSettings.resolve(tmp_path), lambda: LabellerSettings.resolve(tmp_path)]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        for resolve in resolvers:
            resolve()


def test_environment_beats_the_loop_file_for_the_embedding_backend(tmp_path, monkeypatch):
    from loops.loop.config import load

    loop_file = tmp_path / "loop.toml"
    loop_file.write_text('[embed]\nbackend = "auto"\nview = "thread"\n')
    monkeypatch.setenv("CURATE_EMBED_BACKEND", "onnx")
    config = load(loop_file)
    assert (config.embed.backend, config.embed.view) == ("onnx", "thread")
    assert load(None).embed.backend == "onnx"
    monkeypatch.setenv("CURATE_EMBED_BACKEND", "tpu")
    with pytest.raises(ConfigError, match="CURATE_EMBED_BACKEND: 'embed.backend' = 'tpu' is not allowed"):
        load(loop_file)


@pytest.mark.parametrize("port", ["70000", "-1", "0", "http"])
def test_a_server_port_out_of_range_from_the_environment_or_file_names_the_setting(tmp_path, monkeypatch, port):
    monkeypatch.setenv("CURATE_ANNOTATE_PORT", port)
    with pytest.raises(ConfigError, match="CURATE_ANNOTATE_PORT.*from 1 to 65535"):
        ServerSettings.resolve(tmp_path)
    monkeypatch.delenv("CURATE_ANNOTATE_PORT")
    (tmp_path / "curate.toml").write_text(f"[annotate.server]\nport = {port if port != 'http' else repr(port)}\n")
    with pytest.raises(ConfigError, match=r"\[annotate.server\] port"):
        ServerSettings.resolve(tmp_path)


def test_a_loop_file_embed_or_engine_key_it_does_not_set_falls_through_like_curate_embed(tmp_path, monkeypatch):
    """One path: what the loop file leaves out of [embed]/[engine] comes from the environment, else curate.toml, else
    the default, as for `curate embed`; what it sets wins over curate.toml (and the environment over both)."""
    from loops.loop import steps
    from loops.loop.config import load
    from loops.loop.context import RunContext

    for var in ("CURATE_EMBED_BACKEND", "CURATE_EMBED_VIEW", "CURATE_EMBED_MODEL", "CURATE_ENGINE_KIND"):
        monkeypatch.delenv(var, raising=False)
    store = Store.open(tmp_path)
    (tmp_path / "curate.toml").write_text('[embed]\nview = "last_turn"\nbackend = "torch"\n')
    silent, pinned = tmp_path / "silent.toml", tmp_path / "pinned.toml"
    silent.write_text('name = "silent"\n')
    pinned.write_text('[embed]\nbackend = "onnx"\nview = "thread"\n')

    def step(path):  # the embed step on an empty store: resolves its settings and embeds nothing
        figures = steps.embed(RunContext(store, load(path), "run"))
        return figures["view"], figures["backend"].split("-")[0]  # e.g. onnx-int8-…: the backend, then its recipe

    assert step(silent) == ("last_turn", "torch")  # curate.toml, as `curate embed` reads it
    assert step(pinned) == ("thread", "onnx")  # the loop file's own keys, as before
    monkeypatch.setenv("CURATE_EMBED_VIEW", "request")
    assert step(silent)[0] == step(pinned)[0] == "request"  # the environment beats both files
    assert (load(silent).engine.kind, load(silent).engine.address, load(silent).embed.model) == (None, None, None)
