#!/usr/bin/env python3
"""Latency of one `salient explore` update, as a client sees it.

Start an explorer with test images, for instance

    salient explore --port 8201 --model out/demo/mnist-sample.safetensors \
        --dataset mnist --data fixtures/mnist-sample

then run

    python3 benches/explore_latency.py 8201 [N]

For N test images spread over the test split (default 50) it posts each image
with the page's default methods and the gradient rule to /api/explain, and
prints the median, 90th percentile and maximum of the server's own timing
(maps and trace apart) and of the round trip with the JSON parsed.
Standard library only.
"""

import json
import statistics
import sys
import time
import urllib.request


def fetch(url, body=None):
    request = urllib.request.Request(url, data=body)
    with urllib.request.urlopen(request) as answer:
        return answer.read()


def spread(values):
    values = sorted(values)
    p90 = values[max(0, int(0.9 * len(values)) - 1)]
    return f"median {statistics.median(values):.1f}  p90 {p90:.1f}  max {values[-1]:.1f}"


def main():
    port = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    base = f"http://127.0.0.1:{port}"
    info = json.loads(fetch(base + "/api/model"))
    if not info["samples"]:
        sys.exit("the explorer has no test images: start it with --dataset and --data")
    methods = [m["name"] for m in info["methods"] if m["default"]]
    images = info["samples"]["count"]
    server, maps, trace, round_trip, sizes = [], [], [], [], []
    for k in range(count):
        sample = json.loads(fetch(f"{base}/api/sample/{k * images // count}"))
        request = json.dumps({"pixels": sample["pixels"], "methods": methods, "rule": "gradient"})
        start = time.perf_counter()
        body = fetch(base + "/api/explain", request.encode())
        answer = json.loads(body)
        round_trip.append((time.perf_counter() - start) * 1e3)
        server.append(answer["timing_ms"]["total"])
        maps.append(answer["timing_ms"]["maps"])
        trace.append(answer["timing_ms"]["trace"])
        sizes.append(len(body))
    print(f"{info['model']} {info['input_shape']}, {len(methods)} methods, {count} images (ms)")
    print("server, in all     ", spread(server))
    print("  maps             ", spread(maps))
    print("  trace            ", spread(trace))
    print("round trip, parsed ", spread(round_trip))
    print(f"answer size         {statistics.median(sizes) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
