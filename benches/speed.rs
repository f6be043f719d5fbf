//! Speed benchmarks: convolution layers of the tutorial network, a training
//! step, saliency, and one update of the explorer.
//!
//! Run them all with `cargo bench --bench speed` (3 to 4 minutes on 2 cores),
//! or pick some:
//! `cargo bench -- conv2d/fwd/` or `cargo bench -- train_step`. Criterion prints
//! medians with confidence intervals; throughput is in elements per second,
//! where for `conv2d` an element is one floating-point operation (FLOP), so
//! "Gelem/s" reads GFLOP/s, and for the others an element is one image.
//!
//! FLOPs are counted as PyTorch's reference figures count them:
//! forward `2·N·Cout·Hout·Wout·Cin·kh·kw`, forward + backward three times that.
//! `benches/pytorch_reference.py` times the same ids in PyTorch, to run in the
//! same minutes as these on a machine whose speed drifts.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Axis, Slice};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use salient::model::graph::Graph;
use salient::model::{Classifier, Sequential};
use salient::ops::{conv2d_forward, Conv2dSpec};
use salient::saliency::{Explainer, Method, Options};
use salient::tensor::Pool;
use salient::train::TrainStep;
use salient::{Kernels, ReluRule, Tape, Tensor};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_simple_fn(shape.to_vec(), || rng.random_range(-1.0..1.0))
}

/// The four 3x3 'valid' convolutions of the tutorial model, batch 250.
const LAYERS: [(&str, usize, usize, usize); 4] = [
    // (id, Cin, Cout, input side)
    ("mnist_conv1", 1, 32, 28),
    ("mnist_conv2", 32, 64, 13),
    ("cifar_conv1", 3, 32, 32),
    ("cifar_conv2", 32, 64, 15),
];
const BATCH: usize = 250;

fn flops(cin: usize, cout: usize, side: usize) -> u64 {
    let out = side - 2;
    (2 * BATCH * cout * out * out * cin * 9) as u64
}

fn conv2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for (id, cin, cout, side) in LAYERS {
        let x = random(&[BATCH, cin, side, side], 1);
        let w = random(&[cout, cin, 3, 3], 2);
        let b = random(&[cout], 3);
        let spec = Conv2dSpec::default();

        group.throughput(Throughput::Elements(flops(cin, cout, side)));
        let mut pool = Pool::new();
        group.bench_function(BenchmarkId::new("fwd", id), |bench| {
            bench.iter(|| {
                let y = conv2d_forward(&x, &w, &b, spec, &mut pool).unwrap();
                black_box(&y);
                pool.give(y);
            })
        });

        // The forward saliency runs (`Kernels::Fast`: no Winograd, so that
        // identical receptive fields give identical outputs), on an
        // inference tape.
        let mut pool = Some(Pool::new());
        group.bench_function(BenchmarkId::new("fwd_fast", id), |bench| {
            bench.iter(|| {
                let taken = pool.take().unwrap();
                let mut tape = Tape::inference_with_pool(taken).with_kernels(Kernels::Fast);
                let (xv, wv, bv) = (
                    tape.constant_ref(&x),
                    tape.constant_ref(&w),
                    tape.constant_ref(&b),
                );
                let y = tape.conv2d(xv, wv, bv, spec).unwrap();
                black_box(tape.value(y).unwrap());
                pool = Some(tape.into_pool());
            })
        });

        // Forward, then the input and weight gradients (and the bias's),
        // kept as a training step keeps its gradients; the seed is read in
        // place, not copied.
        group.throughput(Throughput::Elements(3 * flops(cin, cout, side)));
        let mut pool = Some(Pool::new());
        let seed = random(&[BATCH, cout, side - 2, side - 2], 4);
        group.bench_function(BenchmarkId::new("fwd_bwd", id), |bench| {
            bench.iter(|| {
                let taken = pool.take().unwrap();
                let mut tape = Tape::with_pool(taken).with_kernels(Kernels::Winograd);
                let (xv, wv, bv) = (tape.param(&x), tape.param(&w), tape.param(&b));
                let y = tape.conv2d(xv, wv, bv, spec).unwrap();
                let keep = [xv, wv, bv];
                let grads = tape
                    .backward_to(y, &seed, ReluRule::Gradient, &keep)
                    .unwrap();
                black_box(grads.get(wv));
                tape.recycle(grads);
                pool = Some(tape.into_pool());
            })
        });
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(BATCH as u64));
    for (id, shape) in [("mnist", [1, 28, 28]), ("cifar10", [3, 32, 32])] {
        let mut model = Sequential::tutorial(shape, 10, 0).unwrap();
        let x = random(&[BATCH, shape[0], shape[1], shape[2]], 5).mapv(|v| (v + 1.0) / 2.0);
        let labels: Vec<usize> = (0..BATCH).map(|i| i % 10).collect();
        let mut step = TrainStep::new(1e-3);
        let mut seed = 0;
        group.bench_function(id, |bench| {
            bench.iter(|| {
                seed += 1;
                let mut input = step.pool.zeros(x.shape());
                input.assign(&x);
                black_box(step.step(&mut model, input, &labels, seed).unwrap());
            })
        });
    }
    group.finish();
}

fn saliency(c: &mut Criterion) {
    let mut group = c.benchmark_group("saliency");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let model = Sequential::tutorial([1, 28, 28], 10, 0).unwrap();
    let x = random(&[BATCH, 1, 28, 28], 6).mapv(|v| (v + 1.0) / 2.0);
    let targets: Vec<usize> = (0..BATCH).map(|i| i % 10).collect();
    let options = Options::default();

    // Input gradients of 250 images: one forward and one backward pass. The
    // workspace persists across iterations, as it does across the batches of
    // a longer run (`salient saliency` over a data set).
    let mut explainer = Explainer::new(&model);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("vanilla/mnist", |bench| {
        bench.iter(|| {
            let a = explainer.attribute(&x, Some(&targets), Method::Vanilla, &options);
            black_box(a.unwrap())
        })
    });

    // SmoothGrad of one image: 50 noisy copies through as one batch.
    let one = x.slice_axis(Axis(0), Slice::from(0..1)).to_owned();
    group.throughput(Throughput::Elements(options.samples as u64));
    group.bench_function("smoothgrad/mnist", |bench| {
        bench.iter(|| {
            let a = explainer.attribute(&one, Some(&[3]), Method::SmoothGrad, &options);
            black_box(a.unwrap())
        })
    });
    group.finish();
}

/// torchvision's ResNet-18 at 224x224 (random weights, eval mode): the class
/// scores (`forward`), and the input gradient of one class score per image,
/// a forward and a backward pass (`gradient`, the vanilla saliency map); on
/// one image and on a batch of 16. `benches/pytorch_reference.py resnet18`
/// times the same in PyTorch.
fn resnet18(c: &mut Criterion) {
    let mut group = c.benchmark_group("resnet18");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let model = Graph::resnet18([3, 224, 224], 1000, 0).unwrap();
    let options = Options::default();
    for n in [1usize, 16] {
        let x = random(&[n, 3, 224, 224], 7).mapv(|v| (v + 1.0) / 2.0);
        let targets: Vec<usize> = (0..n).map(|i| i * 37 % 1000).collect();
        let mut pool = Pool::new();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("forward", n), |bench| {
            bench.iter(|| black_box(model.predict_scores(&x, n, &mut pool).unwrap()))
        });
        let mut explainer = Explainer::new(&model);
        group.bench_function(BenchmarkId::new("gradient", n), |bench| {
            bench.iter(|| {
                let a = explainer.attribute(&x, Some(&targets), Method::Vanilla, &options);
                black_box(a.unwrap())
            })
        });
    }
    group.finish();
}

/// One update of `salient explore`: the class scores, the eight default maps,
/// the traced backward pass with every pixel's path, and the answer written as
/// JSON, for one image; on the tutorial's models at their initialisation.
fn explore(c: &mut Criterion) {
    use salient::explore::api::{ExplainRequest, Explorer, DEFAULT_METHODS};
    let mut group = c.benchmark_group("explore");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, shape) in [("mnist", [1, 28, 28]), ("cifar10", [3, 32, 32])] {
        let model = Sequential::tutorial(shape, 10, 0).unwrap();
        let explorer = Explorer::new(model, name.into(), None).unwrap();
        let pixels = random(&[shape.iter().product()], 8)
            .mapv(|v| (v + 1.0) / 2.0)
            .into_raw_vec_and_offset()
            .0;
        let request = ExplainRequest {
            pixels,
            class: None,
            methods: DEFAULT_METHODS.iter().map(|m| m.name().into()).collect(),
            rule: Some("gradient".into()),
        };
        group.bench_function(BenchmarkId::new("update", name), |bench| {
            bench.iter(|| {
                let answer = explorer.explain(&request).unwrap();
                black_box(serde_json::to_vec(&answer).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, conv2d, train_step, saliency, explore, resnet18);
criterion_main!(benches);
