"""The Gradio page over a `Session`: three tabs (Translate, Swap grid, Retrieve). Every event shares one queue
slot (`concurrency_id="model"`), so requests take turns on the model; a user error is one line on the page
(`gr.Error`). Outputs are PNG (lossless: what the model drew), served from Gradio's own cache only."""
from __future__ import annotations

import functools

import gradio as gr

from iiae.app.session import MAX_K, MAX_SAMPLES, MAX_SWAP, Session
from iiae.errors import UserError

ONE_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "model"}
CSS = "#t-samples img, #t-guided img, #r-matches img, #s-grid img { image-rendering: pixelated; }"  # 32-px images


def _one_line(fn):
    """A UserError (bad upload, bad number) becomes the page's error message instead of a traceback."""
    @functools.wraps(fn)
    def wrapped(*args):
        try:
            return fn(*args)
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from None
    return wrapped


def _header(session: Session) -> str:
    x, y = session.domains["x"], session.domains["y"]
    lines = [f"# IIAE · {session.dataset or session.source}",
             f"Model `{session.source}`: {session.size}×{session.size} RGB images (uploads are converted and "
             f"resized as its training data was). **X** is *{x.name}*, **Y** is *{y.name}*.",
             "A shared code holds what both domains show; each domain's exclusive code holds what only it shows."]
    return "\n\n".join(lines)


def build(session: Session) -> gr.Blocks:
    domains = [(session.domains[k].label, k) for k in ("x", "y")]
    image_in = dict(type="filepath", image_mode=None, sources=["upload", "clipboard"], height=220)
    with gr.Blocks(title=f"IIAE · {session.dataset or session.source}", analytics_enabled=False) as page:
        gr.Markdown(_header(session))
        with gr.Tab("Translate"):
            with gr.Row():
                with gr.Column():
                    source = gr.Radio(domains, value="x", label="domain of the uploaded image", elem_id="t-domain")
                    upload = gr.Image(label="image to translate", elem_id="t-input", **image_in)
                    reference = gr.Image(label="optional: a reference image of the other domain (its exclusive "
                                               "code makes the guided translation)", elem_id="t-reference", **image_in)
                    n = gr.Slider(1, MAX_SAMPLES, value=3, step=1, label="samples from the prior N(0, I)")
                    seed = gr.Number(value=0, precision=0, label="seed", elem_id="t-seed")
                    go = gr.Button("Translate", variant="primary", elem_id="t-go")
                with gr.Column():
                    samples = gr.Gallery(label="translations (exclusive code from the prior)", format="png",
                                         columns=4, height="auto", elem_id="t-samples")
                    guided = gr.Image(label="guided translation (exclusive code of the reference)", format="png",
                                      type="pil", interactive=False, height=240, elem_id="t-guided")
                    note = gr.Markdown(elem_id="t-note")

            @_one_line
            def translate(path, side, count, seed_value, ref):
                return session.translate(path, side, n=int(count), seed=int(seed_value or 0), reference=ref)

            go.click(translate, [upload, source, n, seed, reference], [samples, guided, note], **ONE_AT_A_TIME)

        with gr.Tab("Swap grid"):
            gr.Markdown(f"Up to {MAX_SWAP} images of a domain: cell (i, j) decodes the shared code of image i with "
                        "the exclusive code of image j (row 0 and column 0 are the inputs).")
            with gr.Row():
                files = {k: gr.File(label=f"{session.domains[k].label} images", file_count="multiple",
                                    file_types=["image"], elem_id=f"s-{k}") for k in ("x", "y")}
            draw = gr.Button("Draw the swap grid", variant="primary", elem_id="s-go")
            grid = gr.Image(label="swap grid", format="png", type="pil", interactive=False, elem_id="s-grid")
            swap_note = gr.Markdown(elem_id="s-note")

            @_one_line
            def swap(x_files, y_files):
                return session.swap({"x": x_files or [], "y": y_files or []})

            draw.click(swap, [files["x"], files["y"]], [grid, swap_note], **ONE_AT_A_TIME)

        with gr.Tab("Retrieve"):
            gallery = session.gallery
            gr.Markdown(f"Searches {gallery.description} by squared Euclidean distance between shared codes (the "
                        "paper's retrieval protocol)." if gallery is not None else
                        "No gallery: start the page with `--data DIR` (a prepared dataset) or `--gallery DIR "
                        "--gallery-domain x|y` to search one.")
            with gr.Row():
                with gr.Column():
                    query_side = gr.Radio(domains, value="x", label="domain of the query", elem_id="r-domain")
                    query = gr.Image(label="query", elem_id="r-query", **image_in)
                    k = gr.Slider(1, MAX_K, value=5, step=1, label="matches (k)")
                    find = gr.Button("Retrieve", variant="primary", elem_id="r-go")
                with gr.Column():
                    matches = gr.Gallery(label="nearest images of the other domain (best first)", format="png",
                                         columns=5, height="auto", elem_id="r-matches")
                    table = gr.Dataframe(headers=["rank", "image", "distance"], interactive=False,
                                         elem_id="r-table")
                    query_note = gr.Markdown(elem_id="r-note")

            @_one_line
            def retrieve(path, side, count):
                return session.retrieve(path, side, int(count))

            find.click(retrieve, [query, query_side, k], [matches, table, query_note], **ONE_AT_A_TIME)
    return page
