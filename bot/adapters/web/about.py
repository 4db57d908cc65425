"""What the web adapter says about itself: the model's name, what the built-in demo model draws, the API's endpoints."""

from __future__ import annotations

import re

from generator.demo import EXAMPLES

DEMO_NAME = "janus-bot demo model"
DEMO_DIR = ("generator", "demo_model")  # where the shipped demo model lives; backend.model is its path

# The demo model's vocabulary is generator/demo/scenes.py's (tests check these words against it).
DEMO_DRAWS = (
    "This is the built-in demo model, a tiny Janus trained on synthetic 48 px scenes: a background colour and one "
    "or two circles, squares or triangles, small or large, in red, orange, yellow, green, blue, purple, white or "
    "black, each at one of nine places (top left, top, top right, left, center, right, bottom left, bottom, bottom "
    "right). Name as much or as little as you like (\"a red circle\", \"two squares on blue\"): what you leave open "
    "changes from picture to picture, and Describe reads its pictures back. Other prompts come out as shapes too; "
    "set [model] name to a Janus checkpoint for real pictures."
)


def is_demo(model: str | None) -> bool:
    """Whether the model is the shipped demo model (its directory, wherever the package is installed)."""
    return model is not None and tuple(_parts(model)[-2:]) == DEMO_DIR


def _parts(model: str) -> list[str]:
    return [part for part in re.split(r"[/\\]", model) if part]


def model_name(model: str | None) -> str | None:
    """The name to show for a model: a hub id's or a directory's last part ("Janus-Pro-7B"), or the demo's name."""
    if model is None:
        return None
    if is_demo(model):
        return DEMO_NAME
    parts = _parts(model)
    return parts[-1] if parts else model


def demo_examples() -> list[str]:
    """Prompts the demo model draws, for the page's example chips."""
    return list(EXAMPLES)


SEEDS_NOTE = (
    "Seeds are strings of digits in every answer (\"seed\": \"1247650969592046033\"): they go up to 2^63 - 1, "
    "past what JavaScript's numbers hold exactly. Send a seed as a string of digits, or as a JSON number up to "
    "9007199254740991 (2^53 - 1)."
)

# (method, path, what it takes, what it does): GET /api/ lists them.
ENDPOINTS = (
    ("GET", "/api/", "", "Lists these endpoints."),
    ("GET", "/api/about", "", "Says which model runs (with example prompts for the demo model), the option "
                              "defaults, the pictures you may start from, and who you are here."),
    ("POST", "/api/imagine", '{"user", "prompt" or "command", "count"?, "cfg"?, "temperature"?, "seed"?, '
                             '"negative"?, "image"?, "region"?}',
     "Queues a job; 202 with its job_id and url. With a picture (\"image\": base64 in JSON, or a file part of "
     "multipart/form-data with the other fields as text parts) only its \"region\" is made again, the bottom "
     "half by default."),
    ("POST", "/api/describe", '{"user", "image" or "job_id" and "index", "count"?}',
     "Queues a describe job: \"count\" prompts (1-8) that would draw a picture, sent as \"image\" (base64 in JSON, "
     "or a file part of multipart/form-data) or one of a job's images (index 0 is the first); 202 with its job_id "
     "and url. Its \"done\" event and status carry the \"prompts\"."),
    ("GET", "/api/jobs", "?before=&limit=&everyone=1", "Lists your jobs, newest first, a page at a time "
                                                       "(everyone's: the admin token)."),
    ("GET", "/api/jobs/{id}", "", "Says everything about a job: status, prompt, negative, seed, options, model, "
                                  "who, when, how long it waited and ran, what it was made from, its region and "
                                  "image URLs (a describe job: its prompts)."),
    ("DELETE", "/api/jobs/{id}", "", "Deletes a finished job's pictures (yours; an admin: anyone's)."),
    ("POST", "/api/jobs/{id}/reroll", '{"user", "prompt"?, "negative"?}', "Makes the job again with a new seed "
                                                                           "(and an edited prompt, if given)."),
    ("POST", "/api/jobs/{id}/vary", '{"user", "index", "strength"? or "region"?, "prompt"?, "negative"?}',
     "Makes variations of one image (index 0 is the first), subtle or strong; with \"region\", Vary (Region): "
     "only that part of it made again."),
    ("POST", "/api/jobs/{id}/upscale", '{"user", "index"}', "Makes one image alone, upscaled."),
    ("POST", "/api/jobs/{id}/cancel", '{"user"}', "Cancels a waiting or running job of yours."),
    ("GET", "/api/jobs/{id}/events", "", "Streams the job's events (server-sent events) until it ends."),
    ("GET", "/api/jobs/{id}/grid.png", "", "The finished grid."),
    ("GET", "/api/jobs/{id}/images/{index}.png", "", "One finished image."),
    ("GET", "/api/jobs/{id}/preview.png", "", "The latest preview while the job runs."),
    ("GET", "/api/jobs/{id}/source.png", "", "The picture a job started from (an image prompt's), as the bot keeps "
                                             "it."),
    ("GET", "/healthz", "", "Says whether the generator is up; 503 while it is not."),
    ("GET", "/metrics", "", "Prometheus metrics."),
)


def api_index() -> dict[str, object]:
    """The answer to GET /api/."""
    return {
        "endpoints": [{"method": m, "path": p, "takes": t, "does": d} for m, p, t, d in ENDPOINTS],
        "notes": {
            "seeds": SEEDS_NOTE,
            "errors": 'Every error is {"error": "<a sentence saying what to do>"} with its status code.',
            "auth": "With an access token set (JANUS_BOT_WEB_TOKEN), send 'Authorization: Bearer <token>'.",
            "writes": "Send request bodies as JSON with 'Content-Type: application/json'; DELETE takes none. "
                      "POST /api/imagine and /api/describe also take multipart/form-data, with the access token or "
                      "from the page.",
            "regions": "A region is [x0, y0, x1, y1], fractions of the width and height from the top left (\"x0,y0,"
                       "x1,y1\" as text, or a name: top/bottom/left/right half, centre, top left, top right, bottom "
                       "left, bottom right); the cells it touches are made again, every other cell is kept.",
        },
    }
