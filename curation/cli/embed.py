"""`curate embed`: vectors for the conversations that have none yet in this model+view+backend space."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports
from curation.cli.engine import engine_options, engine_usage


@click.command()
@click.option("--model", default=None, help="Model name or path (default: the bundled all-MiniLM-L6-v2).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "openvino"]), default=None,
              help="auto (default): the fastest int8 backend for this CPU, else torch; onnx/openvino are int8, "
                   "exported once per machine under the user cache ($CURATE_CACHE_DIR, else ~/.cache/curate).")
@click.option("--view", type=click.Choice(["thread", "last_turn", "request"]), default=None,
              help="What is embedded: the whole thread (default), the last user turn and its reply, or that "
                   "user turn alone. Each view is its own embedding space.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Texts per forward pass (default 16; the onnx backend runs one text at a time).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads (default: all cores; with --engine ray, per worker, default 1).")
@engine_options
@home_option
@json_option
@reports
def embed(model, backend, view, batch_size, threads, engine, ray_address, home, as_json):
    """Embed new conversations; a rerun on unchanged data does nothing."""
    from curation.embed import embed as run_embed
    from curation.store import Store

    with engine_usage():
        result = run_embed(Store.open(home), model=model, backend=backend, view=view, batch_size=batch_size,
                           threads=threads, engine=engine, address=ray_address)
    human = (f"embedded {result['embedded']} conversations ({result['reused']} reused identical texts), "
             f"skipped {result['skipped']} already embedded, in {result['seconds']}s [{result['space']}]")
    if "workers" in result:
        human += f" on {result['workers']} Ray workers"
    if "notice" in result:
        human += f"\nnote: {result['notice']}"
    return result, human
