"""PyTorch's figures for the benchmarks in `speed.rs`, on this machine, now.

The machine's speed drifts by tens of percent from one minute to the next, so
the fairest comparison runs both sides in the same minutes:

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch
    /tmp/torch/bin/python benches/pytorch_reference.py      # a few minutes
    /tmp/torch/bin/python benches/pytorch_reference.py resnet18   # one group
    cargo bench --bench speed -- --noplot

Each id is measured as `speed.rs` measures it (batch 250, 2 threads), in both
memory formats (NCHW and channels-last); the median of 20 runs (10 for a
training step) after 3 warm-up runs is printed for each, and the faster format
is marked with `*`.
"""

import statistics
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)
BATCH = 250
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def median_ms(f, reps=20):
    for _ in range(3):
        f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def report(bench_id, per_format, flops=None):
    best = min(per_format.values())
    for fmt, ms in per_format.items():
        rate = f"  {flops / ms / 1e6:6.1f} GFLOP/s" if flops else ""
        mark = "*" if ms == best else " "
        print(f"{bench_id:32} {fmt:13} {ms:8.3f} ms{rate} {mark}", flush=True)


def conv2d():
    # (id, Cin, Cout, input side), as in speed.rs.
    layers = [
        ("mnist_conv1", 1, 32, 28),
        ("mnist_conv2", 32, 64, 13),
        ("cifar_conv1", 3, 32, 32),
        ("cifar_conv2", 32, 64, 15),
    ]
    for name, cin, cout, side in layers:
        flops = 2 * BATCH * cout * (side - 2) ** 2 * cin * 9
        fwd, fwd_bwd = {}, {}
        for tag, fmt in FORMATS.items():
            x = torch.rand(BATCH, cin, side, side).to(memory_format=fmt)
            conv = torch.nn.Conv2d(cin, cout, 3).to(memory_format=fmt)
            seed = torch.rand(BATCH, cout, side - 2, side - 2).to(memory_format=fmt)
            with torch.no_grad():
                fwd[tag] = median_ms(lambda: conv(x))
            xg = x.clone().requires_grad_(True)

            def step():
                conv.zero_grad(set_to_none=True)
                xg.grad = None
                conv(xg).backward(seed)

            fwd_bwd[tag] = median_ms(step)
        report(f"conv2d/fwd/{name}", fwd, flops)
        report(f"conv2d/fwd_bwd/{name}", fwd_bwd, 3 * flops)


def tutorial(channels, side, classes=10):
    """The tutorial model, as `Sequential::tutorial` builds it."""
    pooled = ((side - 2) // 2 - 2) // 2
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(64 * pooled * pooled, 256), nn.ReLU(), nn.Linear(256, classes),
    )


def train_step():
    for name, channels, side in [("mnist", 1, 28), ("cifar10", 3, 32)]:
        per_format = {}
        for tag, fmt in FORMATS.items():
            model = tutorial(channels, side).to(memory_format=fmt).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            x = torch.rand(BATCH, channels, side, side).to(memory_format=fmt)
            labels = torch.arange(BATCH) % 10
            loss_fn = torch.nn.CrossEntropyLoss()

            def step():
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), labels).backward()
                opt.step()

            per_format[tag] = median_ms(step, reps=10)
        report(f"train_step/{name}", per_format)


def saliency():
    # Input gradients of each image's target score, the head linear (logits).
    per_format = {}
    for tag, fmt in FORMATS.items():
        model = tutorial(1, 28).to(memory_format=fmt).eval()
        x = torch.rand(BATCH, 1, 28, 28).to(memory_format=fmt)
        targets = torch.arange(BATCH) % 10

        def grads():
            xg = x.clone().requires_grad_(True)
            model(xg).gather(1, targets[:, None]).sum().backward()
            return xg.grad

        per_format[tag] = median_ms(grads)
    report("saliency/vanilla/mnist", per_format)


def resnet18():
    # torchvision's ResNet-18 (the architecture written out in
    # fixtures/make-onnx-pytorch.py), random weights, eval mode, 224x224.
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "make-onnx-pytorch.py")
    spec = importlib.util.spec_from_file_location("make_onnx_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for n in (1, 16):
        fwd, grad = {}, {}
        for tag, fmt in FORMATS.items():
            model = module.ResNet18().to(memory_format=fmt).eval()
            x = torch.rand(n, 3, 224, 224).to(memory_format=fmt)
            targets = torch.arange(n) * 37 % 1000

            def forward():
                with torch.no_grad():
                    return model(x)

            def gradient():
                xg = x.clone().requires_grad_(True)
                model(xg).gather(1, targets[:, None]).sum().backward()
                return xg.grad

            reps = 10 if n == 1 else 5
            fwd[tag] = median_ms(forward, reps)
            grad[tag] = median_ms(gradient, reps)
        report(f"resnet18/forward/{n}", fwd)
        report(f"resnet18/gradient/{n}", grad)


if __name__ == "__main__":
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for group in (conv2d, train_step, saliency, resnet18):
        if wanted in group.__name__:
            group()
