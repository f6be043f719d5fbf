//! Hostile input, run through the `salient` binary as a careless or hostile
//! user would: files with lying headers (allocation bombs), truncations and
//! corruptions of every format the tool reads, special files, and bad flags.
//!
//! Every case runs in a child process under an address-space limit
//! (`ulimit -v`, [`ADDRESS_SPACE_KB`]), so a case that tried to allocate what
//! a file declares would abort instead of taking the machine. Each case must:
//!
//! - exit 0, or fail with one line `salient: error: ...` and exit code 1 or
//!   2: no panic, no abort, no signal;
//! - peak under [`PEAK_LIMIT_KB`] of resident memory (read with `wait4`);
//! - leave a checkpoint that was there before exactly as it was.
//!
//! Each test prints its number of cases by kind; `cargo test --release --test
//! hostile -- --nocapture` shows them.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use salient::layers::Activation;
use salient::model::{self, Sequential};
use tempfile::TempDir;

mod common;

/// Address space of each child: far above what a clean run needs, far below
/// what any bomb here declares.
const ADDRESS_SPACE_KB: u64 = 2 << 20;
/// Resident memory no case may exceed.
const PEAK_LIMIT_KB: u64 = 512 << 10;

/// What one run of the binary did.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    peak_kb: u64,
}

/// Runs `salient args` in `dir` under the address-space limit and measures
/// its peak resident memory.
fn run(dir: &Path, args: &[String]) -> Run {
    let out = dir.join(".stdout");
    let err = dir.join(".stderr");
    // Waited for below with wait4, which std's Child cannot do (it gives no
    // resource usage).
    #[allow(clippy::zombie_processes)]
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KB}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_salient"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("sh runs");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be written into.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; both pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let status = std::process::ExitStatus::from_raw(status);
    Run {
        code: status.code(),
        signal: status.signal(),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        peak_kb: usage.ru_maxrss as u64,
    }
}

/// How a case may end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A clean error: exit 1 or 2, one line on stderr.
    Error,
    /// Success or a clean error (a corruption that may leave a valid file).
    Either,
    /// Success.
    Success,
}

/// A suite of cases of one kind, with the failures found.
struct Suite {
    dir: TempDir,
    counts: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
    peak_kb: u64,
}

impl Suite {
    fn new() -> Self {
        Suite {
            dir: tempfile::tempdir().unwrap(),
            counts: BTreeMap::new(),
            failures: Vec::new(),
            peak_kb: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    /// Runs one case and checks how it ended; `needle`, if given, must be in
    /// the error message.
    fn case(&mut self, kind: &'static str, name: &str, args: &[String], expect: Expect) -> Run {
        self.case_with(kind, name, args, expect, None)
    }

    fn case_with(
        &mut self,
        kind: &'static str,
        name: &str,
        args: &[String],
        expect: Expect,
        needle: Option<&str>,
    ) -> Run {
        *self.counts.entry(kind).or_default() += 1;
        let r = run(self.dir.path(), args);
        self.peak_kb = self.peak_kb.max(r.peak_kb);
        let mut problems = Vec::new();
        if r.signal.is_some() || !matches!(r.code, Some(0..=2)) {
            problems.push(format!("ended by {:?} / code {:?}", r.signal, r.code));
        }
        if r.stderr.contains("panicked") || r.stderr.contains("internal error") {
            problems.push("panicked".into());
        }
        let failed = r.code != Some(0);
        match expect {
            Expect::Error if !failed => problems.push("succeeded, expected an error".into()),
            Expect::Success if failed => problems.push("failed, expected success".into()),
            _ => {}
        }
        if failed {
            if r.stderr.lines().count() != 1 || !r.stderr.starts_with("salient: error: ") {
                problems.push("the error is not one `salient: error:` line".into());
            }
            if let Some(needle) = needle {
                if !r.stderr.contains(needle) {
                    problems.push(format!("the error does not say {needle:?}"));
                }
            }
        }
        if r.peak_kb > PEAK_LIMIT_KB {
            problems.push(format!("peak memory {} MB", r.peak_kb >> 10));
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "[{kind}] {name}: {}\n  args: {args:?}\n  stderr: {}",
                problems.join("; "),
                r.stderr.trim()
            ));
        }
        r
    }

    /// Prints the counts and fails with every problem found.
    fn finish(self, title: &str) {
        let total: usize = self.counts.values().sum();
        eprintln!(
            "{title}: {total} cases, peak {} MB: {:?}",
            self.peak_kb >> 10,
            self.counts
        );
        assert!(
            self.failures.is_empty(),
            "{} of {total} cases failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// A saved MNIST-shaped tutorial model (random weights: no training needed to
/// test loading) and its bytes.
fn checkpoint(shape: [usize; 3]) -> &'static Vec<u8> {
    static MNIST: OnceLock<Vec<u8>> = OnceLock::new();
    static CIFAR: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if shape[0] == 1 { &MNIST } else { &CIFAR };
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = Sequential::tutorial(shape, 10, 3).unwrap();
        model::save(&model, &path).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// A PNG of `w x h` pixels with `channels` 1 or 3, pixels from `f`.
fn png(w: u32, h: u32, channels: usize, f: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(if channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let n = w as usize * h as usize * channels;
    let data: Vec<u8> = (0..n).map(f).collect();
    enc.write_header().unwrap().write_image_data(&data).unwrap();
    out
}

/// A PNG whose header says `w x h`, streamed row by row (for sizes whose
/// pixels should never be in memory at once).
fn big_png(w: u32, h: u32, channels: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(if channels == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_compression(png::Compression::Fast);
    {
        let mut writer = enc.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let row = vec![0u8; w as usize * channels];
        for _ in 0..h {
            stream.write_all(&row).unwrap();
        }
        stream.finish().unwrap();
        writer.finish().unwrap();
    }
    out
}

/// `png` with its IHDR width and height replaced (and the CRC made right).
fn lying_png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(4, 4, 1, |i| i as u8);
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    bytes
}

/// A real JPEG from the shared CIFAR-10 folders, if they are there.
fn real_jpeg() -> Option<Vec<u8>> {
    let dir = common::shared_data("cifar10/test/cat")?;
    let mut files: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    files.sort_by_key(|e| e.file_name());
    std::fs::read(files.first()?.path()).ok()
}

/// `jpeg` with the size in its frame header (SOF0/SOF2) replaced.
fn lying_jpeg(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg.to_vec();
    let at = bytes
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
        .expect("a frame header");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[at + 5..at + 7].copy_from_slice(&height.to_be_bytes());
    bytes[at + 7..at + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

/// Cut points spread over a file of `len` bytes, the first ones included.
fn cuts(len: usize, n: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..8.min(len)).collect();
    points.extend((1..n).map(|i| i * len / n));
    points.push(len.saturating_sub(1));
    points.sort_unstable();
    points.dedup();
    points
}

/// `n` copies of `bytes`, each with a few random bytes replaced (seeded).
fn flips(bytes: &[u8], n: usize, seed: u64, from: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut b = bytes.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(from.min(b.len() - 1)..b.len());
                b[i] = rng.random();
            }
            b
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A gzip stream of `header` followed by `zeros` zero bytes, compressed as it
/// goes (a few megabytes of output for gigabytes of zeros).
fn gzip_bomb(header: &[u8], zeros: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(header).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len());
        enc.write_all(&block[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

fn idx_images(count: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [count, rows, cols] {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

/// Tensors as (name, shape, values).
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A change to a checkpoint's tensors, named, with what the error must say.
type TensorEdit = (&'static str, Box<dyn Fn(&mut Tensors)>, &'static str);

/// A safetensors file with `tensors` and the given metadata, written with the
/// `safetensors` crate.
fn safetensors_file(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<_> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let meta = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// A small valid model's architecture JSON and tensors, to edit.
fn small_model() -> (serde_json::Value, Tensors) {
    let model = Sequential::builder([1, 6, 6])
        .conv2d(2, 3, Activation::Relu)
        .max_pooling2d(2)
        .flatten()
        .dense(3, Activation::Softmax)
        .build(0)
        .unwrap();
    let arch = serde_json::to_value(model.architecture()).unwrap();
    let mut tensors = Vec::new();
    for layer in model.layers() {
        if let Some((w, b)) = &layer.params {
            tensors.push((
                format!("{}.weight", layer.name),
                w.shape().to_vec(),
                w.iter().copied().collect(),
            ));
            tensors.push((
                format!("{}.bias", layer.name),
                b.shape().to_vec(),
                b.iter().copied().collect(),
            ));
        }
    }
    (arch, tensors)
}

#[test]
fn checkpoints() {
    let mut s = Suite::new();
    let image = s.write("digit.png", &png(28, 28, 1, |i| (i * 7) as u8));
    let small_image = s.write("small.png", &png(6, 6, 1, |i| (i * 40) as u8));
    let predict =
        |model: &str, image: &str| strings(&["predict", "--model", model, "--image", image]);
    let good = checkpoint([1, 28, 28]).clone();
    let good_path = s.write("good.safetensors", &good);
    s.case(
        "checkpoint: valid",
        "the valid checkpoint",
        &predict(&good_path, &image),
        Expect::Success,
    );

    // Truncations and corruptions of a real checkpoint.
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    for cut in
        cuts(good.len(), 20)
            .into_iter()
            .chain([header_len + 7, header_len + 8, header_len + 9])
    {
        let p = s.write("cut.safetensors", &good[..cut]);
        s.case(
            "checkpoint: truncated",
            &format!("cut at {cut}"),
            &predict(&p, &image),
            Expect::Error,
        );
    }
    for (i, bytes) in flips(&good[..header_len + 8], 30, 1, 0).iter().enumerate() {
        let mut b = bytes.clone();
        b.extend_from_slice(&good[header_len + 8..]);
        let p = s.write("flip.safetensors", &b);
        s.case(
            "checkpoint: header corrupted",
            &format!("flip {i}"),
            &predict(&p, &image),
            Expect::Either,
        );
    }
    for (i, b) in flips(&good, 10, 2, header_len + 8).iter().enumerate() {
        let p = s.write("flipdata.safetensors", b);
        s.case(
            "checkpoint: data corrupted",
            &format!("flip {i}"),
            &predict(&p, &image),
            Expect::Either,
        );
    }
    for n in [0u64, 3, good.len() as u64, 5 << 20, 1 << 40, u64::MAX] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&n.to_le_bytes());
        let p = s.write("len.safetensors", &b);
        s.case(
            "checkpoint: header length lies",
            &format!("{n}"),
            &predict(&p, &image),
            Expect::Error,
        );
    }

    // Architectures that declare what they do not hold.
    let (arch, tensors) = small_model();
    // The small model's tensors under the architecture `json`.
    let with_json = |s: &mut Suite, name: &str, json: &str, needle: &str| {
        let p = s.write(
            "arch.safetensors",
            &safetensors_file(&tensors, &[("architecture", json)]),
        );
        s.case_with(
            "checkpoint: architecture bomb",
            name,
            &predict(&p, &small_image),
            Expect::Error,
            Some(needle),
        );
    };
    let bomb = |s: &mut Suite, name: &str, edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut a = arch.clone();
        edit(&mut a);
        with_json(s, name, &serde_json::to_string(&a).unwrap(), needle);
    };
    let big = 1u64 << 62;
    bomb(
        &mut s,
        "dense of 100,000,000 units",
        &|a| a["layers"][3]["units"] = 100_000_000.into(),
        "--max-params",
    );
    bomb(
        &mut s,
        "input of 100,000 x 100,000",
        &|a| a["input_shape"] = serde_json::json!([1, 100000, 100000]),
        "--max-pixels",
    );
    bomb(
        &mut s,
        "2^62 filters",
        &|a| a["layers"][0]["filters"] = big.into(),
        "limit",
    );
    bomb(
        &mut s,
        "2^62 kernel",
        &|a| a["layers"][0]["kernel_size"] = serde_json::json!([big, big]),
        "conv2d",
    );
    bomb(
        &mut s,
        "2^62 stride",
        &|a| a["layers"][0]["strides"] = big.into(),
        "window",
    );
    bomb(
        &mut s,
        "stride 0",
        &|a| a["layers"][0]["strides"] = 0.into(),
        "stride",
    );
    bomb(
        &mut s,
        "pool 0",
        &|a| a["layers"][1]["pool_size"] = serde_json::json!([0, 0]),
        "pool",
    );
    bomb(
        &mut s,
        "pool 2^62",
        &|a| a["layers"][1]["pool_size"] = serde_json::json!([big, big]),
        "window",
    );
    bomb(
        &mut s,
        "dropout 2",
        &|a| {
            a["layers"].as_array_mut().unwrap().insert(2, serde_json::json!({"name": "d", "type": "Dropout", "rate": 2.0, "output_shape": [2, 2, 2]}))
        },
        "dropout",
    );
    bomb(
        &mut s,
        "no layers",
        &|a| a["layers"] = serde_json::json!([]),
        "at least one layer",
    );
    bomb(
        &mut s,
        "5,000 layers",
        &|a| {
            let layers = a["layers"].as_array_mut().unwrap();
            for i in 0..5000 {
                layers.insert(2, serde_json::json!({"name": format!("d{i}"), "type": "Dropout", "rate": 0.5, "output_shape": [2, 2, 2]}));
            }
        },
        "layers",
    );
    bomb(
        &mut s,
        "input 2^62 channels",
        &|a| a["input_shape"] = serde_json::json!([big, 6, 6]),
        "limit",
    );
    bomb(
        &mut s,
        "zero input",
        &|a| a["input_shape"] = serde_json::json!([1, 0, 6]),
        "zero",
    );
    bomb(
        &mut s,
        "unknown layer type",
        &|a| a["layers"][2]["type"] = "Attention".into(),
        "architecture",
    );
    bomb(
        &mut s,
        "duplicate names",
        &|a| a["layers"][1]["name"] = "conv2d".into(),
        "used twice",
    );
    bomb(
        &mut s,
        "wrong output shape",
        &|a| a["layers"][0]["output_shape"] = serde_json::json!([2, 5, 5]),
        "output_shape",
    );
    bomb(
        &mut s,
        "a million class names",
        &|a| a["class_names"] = serde_json::json!(vec!["x"; 1_000_000]),
        "bytes",
    );
    bomb(
        &mut s,
        "too few class names",
        &|a| a["class_names"] = serde_json::json!(["a"]),
        "class_names",
    );
    bomb(
        &mut s,
        "dense before flatten",
        &|a| {
            a["layers"].as_array_mut().unwrap().remove(2);
        },
        "Flatten",
    );
    bomb(
        &mut s,
        "negative units",
        &|a| a["layers"][3]["units"] = (-5).into(),
        "architecture",
    );
    for (name, json, needle) in [
        ("not JSON", "{not json".to_string(), "architecture"),
        ("a number", "42".to_string(), "architecture"),
        ("nested 100,000 deep", "[".repeat(100_000), "architecture"),
        (
            "2 MB of JSON",
            format!("{{\"pad\": \"{}\"}}", "x".repeat(2 << 20)),
            "bytes",
        ),
    ] {
        with_json(&mut s, name, &json, needle);
    }
    let p = s.write("nometa.safetensors", &safetensors_file(&tensors, &[]));
    s.case_with(
        "checkpoint: tensors",
        "no architecture",
        &predict(&p, &small_image),
        Expect::Error,
        Some("architecture"),
    );

    // Tensors that do not match the architecture, or hold no numbers.
    let json = serde_json::to_string(&arch).unwrap();
    let edits: Vec<TensorEdit> = vec![
        ("NaN weight", Box::new(|t| t[0].2[3] = f32::NAN), "finite"),
        (
            "+inf weight",
            Box::new(|t| t[2].2[0] = f32::INFINITY),
            "finite",
        ),
        (
            "-inf bias",
            Box::new(|t| t[3].2[1] = f32::NEG_INFINITY),
            "finite",
        ),
        (
            "missing tensor",
            Box::new(|t| {
                t.remove(1);
            }),
            "no such tensor",
        ),
        (
            "extra tensor",
            Box::new(|t| t.push(("extra.weight".into(), vec![1], vec![0.0]))),
            "no layer owns",
        ),
        (
            "wrong shape",
            Box::new(|t| {
                t[2].1 = vec![3, 9];
                t[2].2.resize(27, 0.0);
            }),
            "shape",
        ),
    ];
    for (name, edit, needle) in edits {
        let mut t = tensors.clone();
        edit(&mut t);
        let p = s.write(
            "t.safetensors",
            &safetensors_file(&t, &[("architecture", &json)]),
        );
        s.case_with(
            "checkpoint: tensors",
            name,
            &predict(&p, &small_image),
            Expect::Error,
            Some(needle),
        );
    }
    // A header whose offsets point past the file, written by hand.
    let header = format!(
        "{{\"__metadata__\":{{\"architecture\":{}}},\"conv2d.weight\":{{\"dtype\":\"F32\",\"shape\":[2,1,3,3],\"data_offsets\":[0,1000000000000]}}}}",
        serde_json::to_string(&json).unwrap()
    );
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend([0u8; 72]);
    let p = s.write("offsets.safetensors", &b);
    s.case(
        "checkpoint: tensors",
        "offsets past the end",
        &predict(&p, &small_image),
        Expect::Error,
    );

    // Not a checkpoint at all.
    let fifo = s.path("fifo.safetensors");
    mkfifo(&fifo);
    std::os::unix::fs::symlink("loop2", s.path("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", s.path("loop2")).unwrap();
    let sparse = s.path("sparse.safetensors");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let special = [
        ("/dev/zero", "/dev/zero".to_string(), "device"),
        ("a FIFO", fifo.display().to_string(), "FIFO"),
        ("a folder", s.dir.path().display().to_string(), "folder"),
        (
            "a symlink loop",
            s.path("loop1").display().to_string(),
            "loop1",
        ),
        (
            "missing",
            s.path("none.safetensors").display().to_string(),
            "No such file",
        ),
        ("empty", s.write("empty.safetensors", b""), "header"),
        ("a PNG", image.clone(), "header"),
        ("a 10 GB sparse file", sparse.display().to_string(), "limit"),
    ];
    for (name, path, needle) in special {
        s.case_with(
            "checkpoint: not a checkpoint",
            name,
            &predict(&path, &image),
            Expect::Error,
            Some(needle),
        );
    }
    // The parameter limit, lowered on the command line, names the layer.
    let mut args = predict(&good_path, &image);
    args.extend(strings(&["--max-params", "100000"]));
    s.case_with(
        "checkpoint: limits",
        "--max-params 100000",
        &args,
        Expect::Error,
        Some("layer dense"),
    );
    s.finish("checkpoints");
}

#[test]
fn images() {
    let mut s = Suite::new();
    let model = s.write("m.safetensors", checkpoint([1, 28, 28]));
    let predict = |image: &str| strings(&["predict", "--model", &model, "--image", image]);

    let rgb = png(40, 30, 3, |i| (i * 13 % 251) as u8);
    let p = s.write("rgb.png", &rgb);
    s.case("png: valid", "40x30 RGB", &predict(&p), Expect::Success);
    for cut in cuts(rgb.len(), 20) {
        let p = s.write("cut.png", &rgb[..cut]);
        // Without its last chunk (IEND, 12 bytes), a PNG still holds every pixel.
        let expect = if cut + 12 >= rgb.len() {
            Expect::Either
        } else {
            Expect::Error
        };
        s.case(
            "png: truncated",
            &format!("cut at {cut}"),
            &predict(&p),
            expect,
        );
    }
    for (i, b) in flips(&rgb, 40, 3, 8).iter().enumerate() {
        let p = s.write("flip.png", b);
        s.case(
            "png: corrupted",
            &format!("flip {i}"),
            &predict(&p),
            Expect::Either,
        );
    }
    for (w, h) in [
        (100_000, 100_000),
        (16_384, 16_384),
        (u32::MAX, 1),
        (1, 0x7fff_ffff),
        (0, 0),
    ] {
        let p = s.write("lying.png", &lying_png(w, h));
        s.case(
            "png: header lies",
            &format!("{w}x{h}"),
            &predict(&p),
            Expect::Error,
        );
    }
    // A complete 16,384 x 16,384 PNG: 268 million real pixels.
    let p = s.write("huge.png", &big_png(16_384, 16_384, 1));
    s.case_with(
        "png: above the pixel limit",
        "16384x16384",
        &predict(&p),
        Expect::Error,
        Some("--max-pixels"),
    );
    // At the limit, a photo of 64 megapixels in colour goes through in bounded memory.
    let p = s.write("photo.png", &big_png(8000, 8000, 3));
    s.case(
        "png: at the pixel limit",
        "8000x8000 RGB",
        &predict(&p),
        Expect::Success,
    );
    let mut lowered = predict(&p);
    lowered.extend(strings(&["--max-pixels", "1000000"]));
    s.case_with(
        "png: above the pixel limit",
        "--max-pixels 1000000",
        &lowered,
        Expect::Error,
        Some("1,000,000 pixels"),
    );

    match real_jpeg() {
        Some(jpeg) => {
            let p = s.write("real.jpg", &jpeg);
            s.case(
                "jpeg: valid",
                "a CIFAR-10 JPEG",
                &predict(&p),
                Expect::Success,
            );
            for (w, h) in [(16_000, 16_000), (65_535, 65_535), (0, 0), (1, 65_535)] {
                let p = s.write("lying.jpg", &lying_jpeg(&jpeg, w, h));
                s.case(
                    "jpeg: header lies",
                    &format!("{w}x{h}"),
                    &predict(&p),
                    Expect::Either,
                );
            }
            for cut in cuts(jpeg.len(), 20) {
                let p = s.write("cut.jpg", &jpeg[..cut]);
                s.case(
                    "jpeg: truncated",
                    &format!("cut at {cut}"),
                    &predict(&p),
                    Expect::Either,
                );
            }
            for (i, b) in flips(&jpeg, 40, 4, 2).iter().enumerate() {
                let p = s.write("flip.jpg", b);
                s.case(
                    "jpeg: corrupted",
                    &format!("flip {i}"),
                    &predict(&p),
                    Expect::Either,
                );
            }
        }
        None => eprintln!("skipped the JPEG cases: no ../shared/data/cifar10/test/cat"),
    }

    let fifo = s.path("fifo.png");
    mkfifo(&fifo);
    let sparse = s.path("sparse.png");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    for (name, path) in [
        ("text", s.write("notes.png", b"just some text")),
        ("empty", s.write("empty.png", b"")),
        ("GIF", s.write("anim.png", b"GIF89a\x01\x00\x01\x00")),
        ("FIFO", fifo.display().to_string()),
        ("folder", s.dir.path().display().to_string()),
        ("/dev/zero", "/dev/zero".to_string()),
        ("10 GB sparse", sparse.display().to_string()),
    ] {
        s.case("image: not an image", name, &predict(&path), Expect::Error);
    }
    s.finish("images");
}

#[test]
fn idx_files() {
    let mut s = Suite::new();
    let model = s.write("m.safetensors", checkpoint([1, 28, 28]));
    let n = 50;
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 31 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = idx_images(n as u32, 28, 28, &pixels);
    let label_file = idx_labels(&labels);
    let eval = |dir: &str| {
        strings(&[
            "eval",
            "--model",
            &model,
            "--dataset",
            "mnist",
            "--data",
            dir,
        ])
    };
    // Each case gets a folder with the two test files.
    let mut k = 0;
    let mut case = |s: &mut Suite,
                    kind: &'static str,
                    name: &str,
                    img: &[u8],
                    lab: &[u8],
                    gz: bool,
                    expect: Expect| {
        k += 1;
        let dir = format!("mnist{k}");
        let suffix = if gz { ".gz" } else { "" };
        s.write(&format!("{dir}/t10k-images-idx3-ubyte{suffix}"), img);
        s.write(&format!("{dir}/t10k-labels-idx1-ubyte{suffix}"), lab);
        let r = s.case(kind, name, &eval(&dir), expect);
        let _ = std::fs::remove_dir_all(s.path(&dir));
        r
    };
    case(
        &mut s,
        "idx: valid",
        "raw",
        &images,
        &label_file,
        false,
        Expect::Success,
    );
    case(
        &mut s,
        "idx: valid",
        "gzip",
        &gzip(&images),
        &gzip(&label_file),
        true,
        Expect::Success,
    );
    for cut in cuts(images.len(), 12) {
        case(
            &mut s,
            "idx: truncated",
            &format!("images cut at {cut}"),
            &images[..cut],
            &label_file,
            false,
            Expect::Error,
        );
    }
    let gz = gzip(&images);
    for cut in cuts(gz.len(), 12) {
        case(
            &mut s,
            "idx: truncated",
            &format!("gzip cut at {cut}"),
            &gz[..cut],
            &gzip(&label_file),
            true,
            Expect::Error,
        );
    }
    for cut in cuts(label_file.len(), 8) {
        case(
            &mut s,
            "idx: truncated",
            &format!("labels cut at {cut}"),
            &images,
            &label_file[..cut],
            false,
            Expect::Error,
        );
    }
    for (i, b) in flips(&images[..16], 15, 5, 0).iter().enumerate() {
        let mut b = b.clone();
        b.extend_from_slice(&images[16..]);
        case(
            &mut s,
            "idx: header corrupted",
            &format!("flip {i}"),
            &b,
            &label_file,
            false,
            Expect::Either,
        );
    }
    for (i, b) in flips(&gz, 15, 6, 10).iter().enumerate() {
        case(
            &mut s,
            "idx: gzip corrupted",
            &format!("flip {i}"),
            b,
            &gzip(&label_file),
            true,
            Expect::Either,
        );
    }
    for (i, b) in flips(&label_file, 10, 7, 0).iter().enumerate() {
        case(
            &mut s,
            "idx: labels corrupted",
            &format!("flip {i}"),
            &images,
            b,
            false,
            Expect::Either,
        );
    }
    // Headers that declare far more than the file holds.
    for (count, rows, cols) in [
        (u32::MAX, 28, 28),
        (1, 100_000, 100_000),
        (u32::MAX, u32::MAX, u32::MAX),
        (6_400_000, 28, 28),
        (n as u32, 28, 0),
        (n as u32 + 1, 28, 28),
    ] {
        let b = idx_images(count, rows, cols, &pixels);
        case(
            &mut s,
            "idx: header lies",
            &format!("{count} of {rows}x{cols}"),
            &b,
            &label_file,
            false,
            Expect::Error,
        );
    }
    let mut lying_labels = label_file.clone();
    lying_labels[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    case(
        &mut s,
        "idx: header lies",
        "labels count u32::MAX",
        &images,
        &lying_labels,
        false,
        Expect::Error,
    );
    // Gzip bombs: a few megabytes that expand to gigabytes.
    let header = idx_images(6_400_000, 28, 28, &[]);
    let bomb = gzip_bomb(&header, 5 << 30);
    eprintln!("gzip bomb: {} bytes expanding to 5 GB", bomb.len());
    case(
        &mut s,
        "idx: gzip bomb",
        "5 GB declared",
        &bomb,
        &gzip(&label_file),
        true,
        Expect::Error,
    );
    let header = idx_images(n as u32, 28, 28, &[]);
    let bomb = gzip_bomb(&header, 5 << 30);
    case(
        &mut s,
        "idx: gzip bomb",
        "50 images declared, 5 GB of zeros",
        &bomb,
        &gzip(&label_file),
        true,
        Expect::Error,
    );
    case(
        &mut s,
        "idx: mixed up",
        "labels as images",
        &label_file,
        &images,
        false,
        Expect::Error,
    );
    let mut bad_label = labels.clone();
    bad_label[3] = 200;
    case(
        &mut s,
        "idx: labels corrupted",
        "label 200",
        &images,
        &idx_labels(&bad_label),
        false,
        Expect::Error,
    );

    // Two valid 2,000 x 2,000 images to train the tutorial's CNN on: its
    // layers would need gigabytes, and are refused, naming the layer.
    s.write(
        "big/train-images-idx3-ubyte",
        &idx_images(2, 2000, 2000, &vec![0; 2 * 2000 * 2000]),
    );
    s.write("big/train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
    let out = s.path("big.safetensors").display().to_string();
    s.case_with(
        "idx: model too large for the images",
        "train on 2000x2000",
        &strings(&[
            "train",
            "--dataset",
            "mnist",
            "--data",
            "big",
            "--epochs",
            "1",
            "--out",
            &out,
        ]),
        Expect::Error,
        Some("layer conv2d"),
    );

    let fifo_dir = s.path("fifo");
    std::fs::create_dir_all(&fifo_dir).unwrap();
    mkfifo(&fifo_dir.join("t10k-images-idx3-ubyte"));
    s.write("fifo/t10k-labels-idx1-ubyte", &label_file);
    s.case(
        "idx: special file",
        "images file a FIFO",
        &eval("fifo"),
        Expect::Error,
    );
    std::fs::create_dir_all(s.path("zero")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", s.path("zero/t10k-images-idx3-ubyte")).unwrap();
    s.write("zero/t10k-labels-idx1-ubyte", &label_file);
    s.case(
        "idx: special file",
        "images file /dev/zero",
        &eval("zero"),
        Expect::Error,
    );
    s.finish("idx files");
}

#[test]
fn cifar_batches_and_folders() {
    let mut s = Suite::new();
    let model = s.write("m.safetensors", checkpoint([3, 32, 32]));
    let eval = |dir: &str| {
        strings(&[
            "eval",
            "--model",
            &model,
            "--dataset",
            "cifar10",
            "--data",
            dir,
        ])
    };
    const RECORD: usize = 3073;
    let n = 20;
    let batch: Vec<u8> = (0..n * RECORD)
        .map(|i| {
            if i % RECORD == 0 {
                (i / RECORD % 10) as u8
            } else {
                (i * 7 % 256) as u8
            }
        })
        .collect();
    let mut k = 0;
    let mut case =
        |s: &mut Suite, name: &str, bytes: &[u8], meta: Option<&[u8]>, expect: Expect| {
            k += 1;
            let dir = format!("cifar{k}");
            s.write(&format!("{dir}/test_batch.bin"), bytes);
            if let Some(meta) = meta {
                s.write(&format!("{dir}/batches.meta.txt"), meta);
            }
            s.case("cifar: batch", name, &eval(&dir), expect);
        };
    case(&mut s, "valid", &batch, None, Expect::Success);
    for cut in cuts(batch.len(), 10).into_iter().flat_map(|c| [c, c + 1]) {
        // A cut between records leaves a valid, shorter batch.
        let expect = if cut > 0 && cut % RECORD == 0 {
            Expect::Either
        } else {
            Expect::Error
        };
        case(
            &mut s,
            &format!("cut at {cut}"),
            &batch[..cut],
            None,
            expect,
        );
    }
    let mut bad = batch.clone();
    bad[RECORD * 5] = 11;
    case(&mut s, "label 11", &bad, None, Expect::Error);
    for (i, b) in flips(&batch, 10, 8, 0).iter().enumerate() {
        case(&mut s, &format!("flip {i}"), b, None, Expect::Either);
    }
    let names = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    case(
        &mut s,
        "valid with class names",
        &batch,
        Some(names),
        Expect::Success,
    );
    case(
        &mut s,
        "three class names",
        &batch,
        Some(b"a\nb\nc\n"),
        Expect::Error,
    );
    case(
        &mut s,
        "1 MB of class names",
        &batch,
        Some(&vec![b'x'; 1 << 20]),
        Expect::Error,
    );
    case(
        &mut s,
        "binary class names",
        &batch,
        Some(&[0xff; 100]),
        Expect::Error,
    );

    // Class folders with a lying image among good ones.
    let good = png(32, 32, 3, |i| (i % 256) as u8);
    for (name, odd) in [
        ("a 100,000 x 100,000 header", lying_png(100_000, 100_000)),
        ("a grey image", png(32, 32, 1, |_| 9)),
        ("a 33x32 image", png(33, 32, 3, |_| 9)),
        ("a truncated image", good[..good.len() / 2].to_vec()),
    ] {
        k += 1;
        for class in salient::data::cifar::CLASS_NAMES {
            s.write(&format!("folders{k}/test/{class}/0001.png"), &good);
        }
        s.write(&format!("folders{k}/test/cat/0002.png"), &odd);
        s.case(
            "cifar: class folders",
            name,
            &eval(&format!("folders{k}")),
            Expect::Error,
        );
    }
    let mut args = eval(&format!("folders{k}"));
    args.extend(strings(&["--max-dataset-bytes", "1000"]));
    s.case_with(
        "cifar: class folders",
        "above --max-dataset-bytes",
        &args,
        Expect::Error,
        Some("--max-dataset-bytes"),
    );
    s.finish("cifar");
}

#[test]
fn options_and_outputs() {
    let mut s = Suite::new();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample");
    let data = sample.display().to_string();
    let model = s.write("m.safetensors", checkpoint([1, 28, 28]));
    let before = std::fs::read(&model).unwrap();
    let train = |extra: &[&str]| {
        let mut a = strings(&[
            "train",
            "--dataset",
            "mnist",
            "--data",
            &data,
            "--limit",
            "50",
            "--epochs",
            "1",
        ]);
        a.extend(strings(extra));
        a
    };
    let out = model.as_str();
    for (name, extra, needle) in [
        (
            "learning rate 0",
            vec!["--learning-rate", "0"],
            "learning-rate",
        ),
        (
            "learning rate -1",
            vec!["--learning-rate=-1"],
            "learning-rate",
        ),
        (
            "learning rate NaN",
            vec!["--learning-rate", "NaN"],
            "learning-rate",
        ),
        (
            "learning rate inf",
            vec!["--learning-rate", "inf"],
            "learning-rate",
        ),
        (
            "learning rate 1e40",
            vec!["--learning-rate", "1e40"],
            "learning-rate",
        ),
        ("batch size 0", vec!["--batch-size", "0"], "batch-size"),
        ("epochs 0", vec!["--epochs", "0"], "epochs"),
        ("limit 0", vec!["--limit", "0"], "limit"),
        (
            "validation split 1",
            vec!["--validation-split", "1"],
            "validation-split",
        ),
        (
            "validation split NaN",
            vec!["--validation-split", "NaN"],
            "validation-split",
        ),
    ] {
        let mut extra = extra;
        extra.extend(["--out", out]);
        let args = train(&extra);
        s.case_with("options: train", name, &args, Expect::Error, Some(needle));
    }
    // Outputs that cannot be written are refused before training.
    let folder = s.path("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let file = s.write("a-file", b"");
    for (name, target) in [
        ("--out a folder", folder.display().to_string()),
        ("--out dir/.", format!("{}/.", folder.display())),
        ("--out dir/", format!("{}/", folder.display())),
        ("--out under a file", format!("{file}/m.safetensors")),
        ("--out /dev/null", "/dev/null".to_string()),
    ] {
        let r = s.case(
            "options: train output",
            name,
            &train(&["--out", &target]),
            Expect::Error,
        );
        if r.stdout.contains("Epoch") {
            s.failures
                .push(format!("{name}: trained before refusing the output"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let ro = s.path("read-only");
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let target = ro.join("m.safetensors").display().to_string();
        s.case(
            "options: train output",
            "--out in a read-only folder",
            &train(&["--out", &target]),
            Expect::Error,
        );
    } else {
        eprintln!("skipped the read-only folder case: root writes anywhere");
    }

    let image = s.write("digit.png", &png(28, 28, 1, |i| (i * 3) as u8));
    let saliency = |extra: &[&str]| {
        let mut a = strings(&[
            "saliency",
            "--model",
            &model,
            "--dataset",
            "mnist",
            "--data",
            &data,
            "--method",
            "vanilla",
            "--out",
            "maps",
        ]);
        a.extend(strings(extra));
        a
    };
    for (name, args, needle) in [
        (
            "eval --batch-size 0",
            strings(&[
                "eval",
                "--model",
                &model,
                "--dataset",
                "mnist",
                "--data",
                &data,
                "--batch-size",
                "0",
            ]),
            "batch-size",
        ),
        (
            "predict --top 0",
            strings(&[
                "predict", "--model", &model, "--image", &image, "--top", "0",
            ]),
            "top",
        ),
        (
            "--indices 3,3,3",
            saliency(&["--indices", "3,3,3"]),
            "given twice",
        ),
        ("--samples 0", saliency(&["--samples", "0"]), "samples"),
        ("--steps 0", saliency(&["--steps", "0"]), "steps"),
        (
            "--batch-size 0",
            saliency(&["--batch-size", "0"]),
            "batch-size",
        ),
        ("--noise -1", saliency(&["--noise=-1"]), "noise"),
        ("--noise NaN", saliency(&["--noise", "NaN"]), "noise"),
        ("--fill inf", saliency(&["--fill", "inf"]), "fill"),
        (
            "--baseline NaN",
            saliency(&["--baseline", "NaN"]),
            "baseline",
        ),
        ("--patch 0", saliency(&["--patch", "0"]), "patch"),
        ("--stride 0", saliency(&["--stride", "0"]), "stride"),
        (
            "--max-pixels 0",
            strings(&[
                "predict",
                "--model",
                &model,
                "--image",
                &image,
                "--max-pixels",
                "0",
            ]),
            "max-pixels",
        ),
        (
            "--max-params 0",
            strings(&[
                "predict",
                "--model",
                &model,
                "--image",
                &image,
                "--max-params",
                "0",
            ]),
            "max-params",
        ),
    ] {
        s.case_with(
            "options: commands",
            name,
            &args,
            Expect::Error,
            Some(needle),
        );
    }
    let mut args = saliency(&[]);
    let at = args.len() - 1;
    args[at] = file.clone();
    s.case_with(
        "options: commands",
        "--out a file",
        &args,
        Expect::Error,
        Some("a file"),
    );
    // `report` refuses a patch too large for the image, or an unknown layer,
    // before the first method runs: no picture is written.
    for (name, extra) in [
        ("report --patch 0", vec!["--patch", "0"]),
        (
            "report --patch 29",
            vec!["--patch", "29", "--methods", "vanilla,occlusion"],
        ),
        (
            "report --layer nope",
            vec!["--layer", "nope", "--methods", "vanilla,grad-cam"],
        ),
    ] {
        let dir = format!("report-{}", name.len());
        let mut args = strings(&[
            "report",
            "--model",
            &model,
            "--dataset",
            "mnist",
            "--data",
            &data,
            "--out",
            &dir,
        ]);
        args.extend(strings(&extra));
        s.case("options: report", name, &args, Expect::Error);
        if s.path(&dir).exists() {
            s.failures
                .push(format!("{name}: wrote {dir} before refusing"));
        }
    }
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "a refused command changed the checkpoint"
    );

    // A test split that is there but corrupt fails after training, with the
    // checkpoint saved and said so.
    let dir = s.path("corrupt-test");
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(sample.join(name), dir.join(name)).unwrap();
    }
    s.write(
        "corrupt-test/t10k-images-idx3-ubyte.gz",
        b"\x1f\x8b\x08\x00 broken",
    );
    let saved = s.path("saved.safetensors").display().to_string();
    let args = strings(&[
        "train",
        "--dataset",
        "mnist",
        "--data",
        &dir.display().to_string(),
        "--limit",
        "50",
        "--epochs",
        "1",
        "--out",
        &saved,
    ]);
    s.case_with(
        "options: train output",
        "corrupt test split",
        &args,
        Expect::Error,
        Some("saved in"),
    );
    if model::load(Path::new(&saved)).is_err() {
        s.failures
            .push("corrupt test split: the checkpoint was not saved".into());
    }
    s.finish("options and outputs");
}

/// The library's entry points answer bad arguments with typed errors.
#[test]
fn library_calls_with_bad_arguments_return_errors() {
    use salient::layers::{glorot_uniform, LayerSpec};
    use salient::{Tape, Tensor};
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert!(glorot_uniform(&[5], &mut rng).is_err());
    assert!(glorot_uniform(&[], &mut rng).is_err());
    let dense = LayerSpec::Dense {
        units: 3,
        activation: Activation::Linear,
    };
    assert!(dense.param_shapes(&[]).is_err());
    assert!(dense.param_shapes(&[2, 2]).is_err());
    let logits = Tensor::zeros(ndarray::IxDyn(&[4]));
    assert!(model::loss_and_accuracy(&logits, &[0]).is_err());
    let logits = Tensor::zeros(ndarray::IxDyn(&[2, 3]));
    assert!(model::loss_and_accuracy(&logits, &[0]).is_err());
    assert!(
        Sequential::builder([1, 4, 4]).build(0).is_err(),
        "a model with no layers"
    );

    // A Var knows its tape.
    let mut one = Tape::new();
    let mut other = Tape::new();
    let x = one.input(Tensor::ones(ndarray::IxDyn(&[1, 2])));
    let _ = other.input(Tensor::zeros(ndarray::IxDyn(&[1, 2])));
    let err = other.value(x).unwrap_err().to_string();
    assert!(err.contains("another tape"), "{err}");
    assert!(other.relu(x).is_err());
    let y = one.relu(x).unwrap();
    let grads = one
        .backward(
            y,
            &Tensor::ones(ndarray::IxDyn(&[1, 2])),
            salient::ReluRule::Gradient,
        )
        .unwrap();
    let z = other.input(Tensor::zeros(ndarray::IxDyn(&[1, 2])));
    assert!(
        grads.get(z).is_none(),
        "a gradient read with another tape's var"
    );
    one.clear();
    assert!(one.value(x).is_err(), "a var outlived its tape's clearing");
}
