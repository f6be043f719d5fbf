//! Property-based fuzzing of every parser with random mutations of valid
//! files: IDX (plain and gzip), CIFAR-10 batches, PNG, JPEG, safetensors
//! checkpoints and their architecture JSON.
//!
//! Each mutated file must give a value or a typed error, never a panic, and no
//! single allocation may exceed [`bound`] for its size: a parser that trusted
//! a size in a header would allocate what the header says. A counting global
//! allocator records the largest allocation each thread makes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use proptest::prelude::*;
use salient::data::{cifar, decode, idx};
use salient::layers::Activation;
use salient::model::{self, Sequential};

mod common;

/// The system allocator, noting the largest request of each thread.
struct Counting;

thread_local! {
    // A const initialiser and no destructor: safe to touch inside the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: the caller's guarantees are the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(new_size)));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest allocation a parser may make for an input of `len` bytes:
/// 4 KB per byte (a JPEG holds at most 512 pixels of 3 bytes per byte, a PNG
/// 1,100 bytes of pixels) and 16 MB for the rest.
fn bound(len: usize) -> usize {
    (16 << 20) + 4096 * len
}

/// Runs `parse` on `bytes` and returns the largest allocation it made.
fn largest_allocation<T>(bytes: &[u8], parse: impl FnOnce(&[u8]) -> T) -> usize {
    LARGEST.with(|l| l.set(0));
    drop(parse(bytes));
    LARGEST.with(Cell::get)
}

/// One change to a file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the byte at (position mod length).
    Set(usize, u8),
    /// Write a big-endian and a little-endian "interesting" 32-bit number.
    Number(usize, u32),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes.
    Remove(usize, usize),
    /// Keep only the first (position mod length) bytes.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        0u32,
        1,
        7,
        255,
        0x7fff,
        0xffff,
        0x10000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fffe,
        u32::MAX,
    ]);
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        3 => (any::<usize>(), interesting).prop_map(|(i, n)| Mutation::Number(i, n)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        let len = b.len().max(1);
        match m {
            Mutation::Set(i, v) => {
                if let Some(x) = b.get_mut(i % len) {
                    *x = *v;
                }
            }
            Mutation::Number(i, n) => {
                let at = i % len;
                let bytes = if i % 2 == 0 {
                    n.to_be_bytes()
                } else {
                    n.to_le_bytes()
                };
                for (k, v) in bytes.into_iter().enumerate() {
                    if let Some(x) = b.get_mut(at + k) {
                        *x = v;
                    }
                }
            }
            Mutation::Insert(i, bytes) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = i % len;
                let end = (at + n).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % (b.len() + 1)),
        }
    }
    b
}

fn idx_images_seed() -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4];
    b.extend((0..60).map(|i| (i * 9) as u8));
    b
}

fn idx_labels_seed() -> Vec<u8> {
    vec![0, 0, 8, 1, 0, 0, 0, 4, 3, 1, 4, 1]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn cifar_seed() -> Vec<u8> {
    (0..2 * 3073)
        .map(|i| if i % 3073 == 0 { 3 } else { (i % 256) as u8 })
        .collect()
}

fn png_seed() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 9, 7);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let data: Vec<u8> = (0..9 * 7 * 4).map(|i| (i * 5) as u8).collect();
    enc.write_header().unwrap().write_image_data(&data).unwrap();
    out
}

fn jpeg_seed() -> Option<Vec<u8>> {
    let dir = common::shared_data("cifar10/test/dog")?;
    let mut files: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    files.sort_by_key(|e| e.file_name());
    std::fs::read(files.first()?.path()).ok()
}

/// A small model's checkpoint and the architecture JSON in it.
fn checkpoint_seed() -> (Vec<u8>, String) {
    let model = Sequential::builder([1, 6, 6])
        .conv2d(2, 3, Activation::Relu)
        .max_pooling2d(2)
        .dropout(0.25)
        .flatten()
        .dense(3, Activation::Softmax)
        .build(1)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    model::save(&model, &path).unwrap();
    let json = serde_json::to_string(&model.architecture()).unwrap();
    (std::fs::read(path).unwrap(), json)
}

/// Rebuilds the seed checkpoint with another architecture JSON.
fn with_architecture(seed: &[u8], json: &str) -> Vec<u8> {
    let tensors = safetensors::SafeTensors::deserialize(seed).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors.tensors();
    let meta = [("architecture".to_string(), json.to_string())].into();
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// Checks one parser on one mutated file.
fn check<T>(what: &str, bytes: &[u8], parse: impl FnOnce(&[u8]) -> T) -> Result<(), TestCaseError> {
    let largest = largest_allocation(bytes, parse);
    prop_assert!(
        largest <= bound(bytes.len()),
        "{what}: allocated {largest} bytes for a file of {}",
        bytes.len()
    );
    Ok(())
}

const CASES: u32 = 300;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn idx_parsers(mutations in prop::collection::vec(mutation(), 1..6), gz in any::<bool>()) {
        let p = Path::new("fuzz.idx");
        let (images, labels) = (idx_images_seed(), idx_labels_seed());
        let (images, labels) = match gz {
            true => (gzip(&images), gzip(&labels)),
            false => (images, labels),
        };
        check("idx images", &apply(&images, &mutations), |b| idx::parse_idx_images(b, p))?;
        check("idx labels", &apply(&labels, &mutations), |b| idx::parse_idx_labels(b, p))?;
    }

    #[test]
    fn cifar_parser(mutations in prop::collection::vec(mutation(), 1..6)) {
        let b = apply(&cifar_seed(), &mutations);
        check("cifar batch", &b, |b| cifar::parse_batch(b, Path::new("fuzz.bin")))?;
    }

    #[test]
    fn png_decoder(mutations in prop::collection::vec(mutation(), 1..6)) {
        let b = apply(&png_seed(), &mutations);
        check("png", &b, |b| decode::decode_image(b, Path::new("fuzz.png")))?;
    }

    #[test]
    fn jpeg_decoder(mutations in prop::collection::vec(mutation(), 1..6)) {
        static SEED: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
        // Without the shared data there is no JPEG to mutate (and no encoder
        // among the dependencies to make one).
        if let Some(seed) = SEED.get_or_init(jpeg_seed) {
            let b = apply(seed, &mutations);
            check("jpeg", &b, |b| decode::decode_image(b, Path::new("fuzz.jpg")))?;
        }
    }

    #[test]
    fn checkpoint_loader(mutations in prop::collection::vec(mutation(), 1..6)) {
        let (seed, _) = checkpoint_seed();
        let b = apply(&seed, &mutations);
        check("checkpoint", &b, |b| model::load_bytes(b, Path::new("fuzz.safetensors")))?;
    }

    #[test]
    fn architecture_json(mutations in prop::collection::vec(mutation(), 1..6)) {
        let (seed, json) = checkpoint_seed();
        let json = String::from_utf8_lossy(&apply(json.as_bytes(), &mutations)).into_owned();
        let b = with_architecture(&seed, &json);
        check("architecture", &b, |b| model::load_bytes(b, Path::new("fuzz.safetensors")))?;
    }
}

/// The bound is not vacuous: a parser that trusted a header would break it.
#[test]
fn the_allocation_bound_catches_a_trusting_parser() {
    let header = [0u8, 0, 8, 3, 0, 0x10, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28];
    let trusting = |b: &[u8]| {
        let count = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        std::hint::black_box(vec![0u8; count * 28 * 28])
    };
    assert!(largest_allocation(&header, trusting) > bound(header.len()));
    let checked = largest_allocation(&header, |b| idx::parse_idx_images(b, Path::new("h")));
    assert!(checked <= bound(header.len()), "{checked}");
}

/// Headers that claim an image within the pixel limit but far beyond what the
/// file holds: refused before the pixel buffer is allocated.
#[test]
fn image_headers_within_the_pixel_limit_still_cannot_lie() {
    let mut png = png_seed();
    png[16..20].copy_from_slice(&8000u32.to_be_bytes());
    png[20..24].copy_from_slice(&8000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let mut result = None;
    let largest = largest_allocation(&png, |b| {
        result = Some(decode::decode_image(b, Path::new("lie.png")).map(|_| ()));
    });
    let err = result.unwrap().unwrap_err().to_string();
    assert!(err.contains("PNG size"), "{err}");
    assert!(largest <= bound(png.len()), "{largest}");

    if let Some(jpeg) = jpeg_seed() {
        let mut lie = jpeg.clone();
        let at = lie
            .windows(2)
            .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
            .unwrap();
        lie[at + 5..at + 9].copy_from_slice(&[0x1f, 0x40, 0x1f, 0x40]); // 8000 x 8000
        let mut result = None;
        let largest = largest_allocation(&lie, |b| {
            result = Some(decode::decode_image(b, Path::new("lie.jpg")).map(|_| ()));
        });
        let err = result.unwrap().unwrap_err().to_string();
        assert!(err.contains("JPEG size"), "{err}");
        assert!(largest <= bound(lie.len()), "{largest}");
    }
}
