#!/usr/bin/env python3
"""What 1000 images cost on AWS: this pipeline beside the seed's design.

Reads its inputs from docs/cost-model.json (or --inputs FILE) and token
prices from prices.json, and prints a Markdown table per 1000 images:
Lambda invocations and GB-seconds, Kinesis, EventBridge and S3 requests,
model tokens, and dollars. Every input is documented in the JSON file.
Beside the pipeline on AWS and the seed's design, a backfill with
`collections backfill --direct --batch-api`: the stages run where the
command runs (that machine's time is not counted), originals and thumbnails
in S3, the vision calls through the provider's batch API at its batch price.

    python3 scripts/cost-model.py [--inputs docs/cost-model.json] [--prices prices.json]
"""

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL_VCPU_MIB = 1769  # Lambda gives one full vCPU at 1769 MiB, in proportion below


def image_tokens(width, height):
    """Anthropic's estimate for an image: width x height / 750, after scaling
    the long side down to 1568 px (the API does that to larger images)."""
    scale = min(1.0, 1568 / max(width, height))
    return math.ceil(width * scale * height * scale / 750)


def wall_ms(cpu_ms, memory_mib):
    """CPU time as wall time on a function of this memory (a vCPU share)."""
    return cpu_ms / min(1.0, memory_mib / FULL_VCPU_MIB)


def stage(invocations, billed_ms_per_invocation, memory_mib, cold_start_ms, a):
    cold = invocations * a["cold_start_share"] * cold_start_ms
    gb_seconds = (invocations * billed_ms_per_invocation + cold) / 1000 * memory_mib / 1024
    return {"invocations": invocations, "gb_seconds": gb_seconds}


def ours(x):
    n, a, p = x["images"], x["assumed"], x["pipeline"]
    fill, rust = p["batch_fill"], a["cold_start_ms"]["rust"]
    t, an, em = p["thumbnailer"], p["analyzer"], p["embedder"]
    per_batch = lambda size: max(1, round(size * fill))
    # Thumbnailer: decoding on its vCPU share, S3 transfers overlapped (in_flight at once).
    t_batch = per_batch(t["batch"])
    t_ms = t_batch * (wall_ms(x["measured"]["thumbnail_cpu_ms"], t["memory_mib"]) + 2 * a["s3_transfer_ms"] / t["in_flight"])
    # Analyzer: `concurrency` calls in flight, the thumbnail read first.
    a_batch = per_batch(an["batch"])
    a_ms = math.ceil(a_batch / an["concurrency"]) * a["vision_call_ms"] + a["s3_transfer_ms"]
    # Embedder: one request per batch.
    e_batch = per_batch(em["batch"])
    e_ms = a["embedding_call_ms"] + 50
    stages = {
        "thumbnailer": stage(n / t_batch, t_ms, t["memory_mib"], rust, a),
        "analyzer": stage(n / a_batch, a_ms, an["memory_mib"], rust, a),
        "embedder": stage(n / e_batch, e_ms, em["memory_mib"], rust, a),
    }
    im = x["image"]
    return {
        "stages": stages,
        # S3's event on the default bus is free; the forward to the stack's bus,
        # ImageProcessed and AnalysisComplete are custom events.
        "eventbridge_events": 3 * n,
        "kinesis_put_units": 3 * n,
        "s3_gets": 2 * n,  # the original, then the thumbnail for the model
        "s3_puts": n,
        "vision_input_tokens": n * (image_tokens(im["thumbnail_width"], im["thumbnail_height"]) + a["prompt_tokens"]),
        "vision_output_tokens": n * a["output_tokens"],
        "embedding_tokens": n * a["embedding_tokens"],
    }


def batch_backfill(x):
    """`backfill --direct --batch-api`: no Lambda, stream or event; the
    thumbnail is read again from S3 when its batch is built."""
    m = ours(x)
    zero = {"invocations": 0, "gb_seconds": 0}
    m["stages"] = {name: dict(zero) for name in m["stages"]}
    m.update(eventbridge_events=0, kinesis_put_units=0, batch=True)
    return m


def seed(x):
    n, a, s = x["images"], x["assumed"], x["seed"]
    py = a["cold_start_ms"]["python"]
    t_ms = wall_ms(x["measured"]["pillow_cpu_ms"], s["thumbnailer"]["memory_mib"]) + 2 * a["s3_transfer_ms"]
    # One image an invocation: the function waits out the whole call, after
    # reading the original (several MiB) to send it.
    a_ms = a["vision_call_ms"] + a["s3_transfer_ms"] * max(1, x["image"]["original_mib"])
    e_ms = a["embedding_call_ms"] + 50
    im = x["image"]
    return {
        "stages": {
            "thumbnailer": stage(n, t_ms, s["thumbnailer"]["memory_mib"], py, a),
            "analyzer": stage(n, a_ms, s["analyzer"]["memory_mib"], py, a),
            "embedder": stage(n, e_ms, s["embedder"]["memory_mib"], py, a),
        },
        "eventbridge_events": 2 * n,  # ImageProcessed, AnalysisComplete (S3 invokes the first function)
        "kinesis_put_units": 0,
        "s3_gets": 2 * n,  # the original, twice
        "s3_puts": n,
        "vision_input_tokens": n * (image_tokens(im["original_width"], im["original_height"]) + a["prompt_tokens"]),
        "vision_output_tokens": n * a["output_tokens"],
        "embedding_tokens": n * a["embedding_tokens"],
    }


def dollars(m, x, prices):
    p = x["prices"]
    vision = prices["models"][p["vision_model"]]
    embedding = prices["models"][p["embedding_model"]]
    invocations = sum(s["invocations"] for s in m["stages"].values())
    gb_seconds = sum(s["gb_seconds"] for s in m["stages"].values())
    lambda_cost = invocations * p["lambda_request"] + gb_seconds * p["lambda_gb_second"]
    queues = (
        m["kinesis_put_units"] * p["kinesis_put_unit"]
        + m["eventbridge_events"] * p["eventbridge_event"]
        + m["s3_gets"] * p["s3_get"]
        + m["s3_puts"] * p["s3_put"]
    )
    # Through the batch API, the model's batch prices (its list prices if the table has none).
    rates = vision.get("batch", vision) if m.get("batch") else vision
    tokens = (
        m["vision_input_tokens"] * rates["input"] / 1e6
        + m["vision_output_tokens"] * rates.get("output", 0) / 1e6
        + m["embedding_tokens"] * embedding["input"] / 1e6
    )
    return {"invocations": invocations, "gb_seconds": gb_seconds, "lambda": lambda_cost, "requests": queues, "tokens": tokens}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=ROOT / "docs" / "cost-model.json")
    parser.add_argument("--prices", type=Path, default=ROOT / "prices.json")
    args = parser.parse_args()
    x = json.loads(args.inputs.read_text())
    prices = json.loads(args.prices.read_text())
    models = {"this pipeline": ours(x), "backfill --batch-api": batch_backfill(x), "the seed's design": seed(x)}
    costs = {name: dollars(m, x, prices) for name, m in models.items()}
    n = x["images"]
    print(f"Per {n} images ({x['prices']['vision_model']}, {x['prices']['embedding_model']}; prices of {prices['as_of']}):\n")
    names = list(models)
    print("| | " + " | ".join(names) + " | this pipeline ÷ seed |")
    print("|---|" + "---|" * (len(names) + 1))

    def row(label, values, fmt):
        ratio = f"{values[0] / values[-1]:.2f}" if values[-1] else "—"
        print(f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {ratio} |")

    count = lambda v: f"{v:,.0f}"
    money = lambda v: f"${v:,.4f}"
    row("Lambda invocations", [costs[k]["invocations"] for k in names], count)
    row("Lambda GB-seconds", [costs[k]["gb_seconds"] for k in names], lambda v: f"{v:,.1f}")
    row("Kinesis PUT units", [models[k]["kinesis_put_units"] for k in names], count)
    row("EventBridge events", [models[k]["eventbridge_events"] for k in names], count)
    row("S3 GET / PUT", [models[k]["s3_gets"] + models[k]["s3_puts"] for k in names], count)
    row("vision input tokens", [models[k]["vision_input_tokens"] for k in names], count)
    row("vision output tokens", [models[k]["vision_output_tokens"] for k in names], count)
    row("embedding tokens", [models[k]["embedding_tokens"] for k in names], count)
    row("Lambda ($)", [costs[k]["lambda"] for k in names], money)
    row("Kinesis, EventBridge, S3 ($)", [costs[k]["requests"] for k in names], money)
    row("model tokens ($)", [costs[k]["tokens"] for k in names], money)
    row("total ($)", [sum(costs[k][f] for f in ("lambda", "requests", "tokens")) for k in names], money)


if __name__ == "__main__":
    main()
