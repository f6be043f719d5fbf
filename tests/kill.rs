//! Kill tests of the save path: a child process saves two checkpoints in turn,
//! over and over, and is killed (SIGKILL) or interrupted (SIGINT) at a random
//! moment. Whatever the moment:
//!
//! - the checkpoint is one of the two, complete, byte for byte;
//! - after SIGINT no temporary file is left (the signal handler removes it);
//! - after SIGKILL a temporary file may be left, and the next save removes it.
//!
//! The child is this test binary itself, running the ignored test
//! `child_saves_in_a_loop` with [`CHILD_ENV`] naming the checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use salient::fsutil::TEMP_SUFFIX;
use salient::model::{self, Sequential};

/// The checkpoint the child writes to.
const CHILD_ENV: &str = "SALIENT_KILL_TEST_CHECKPOINT";

/// Two different models of CIFAR-10's size (1.25 million parameters, 5 MB
/// saved): large enough that a save takes a while to kill it in.
fn models() -> [Sequential; 2] {
    [1, 2].map(|seed| Sequential::tutorial([3, 32, 32], 10, seed).unwrap())
}

fn bytes_of(model: &Sequential) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    model::save(model, &path).unwrap();
    std::fs::read(&path).unwrap()
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(TEMP_SUFFIX))
        .collect()
}

#[test]
#[ignore = "the child process of the kill tests; it saves until it is killed"]
fn child_saves_in_a_loop() {
    let target = PathBuf::from(std::env::var(CHILD_ENV).expect("run by the kill tests"));
    salient::fsutil::remove_temp_files_on_signal().unwrap();
    let models = models();
    println!("saving");
    loop {
        for m in &models {
            model::save(m, &target).unwrap();
        }
    }
}

#[test]
fn killed_saves_leave_the_old_checkpoint_or_the_new_one() {
    let models = models();
    let expected = [bytes_of(&models[0]), bytes_of(&models[1])];
    // The same model gives the same bytes, save after save.
    assert_eq!(bytes_of(&models[0]), expected[0]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.safetensors");
    std::fs::write(&target, &expected[0]).unwrap();

    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let (mut killed_mid_save, mut interrupted) = (0, 0);
    let rounds = 60;
    for round in 0..rounds {
        let signal = if round % 2 == 0 {
            libc::SIGKILL
        } else {
            libc::SIGINT
        };
        let before = temp_files(dir.path());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_saves_in_a_loop",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, &target)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once the child is saving, a save takes some tens of milliseconds:
        // a moment drawn from the first 100 ms lands in one.
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        while !line.contains("saving") {
            line.clear();
            assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..100_000)));
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = child.wait_with_output().unwrap();

        let bytes = std::fs::read(&target).unwrap();
        assert!(
            bytes == expected[0] || bytes == expected[1],
            "round {round}: the checkpoint is neither model ({} bytes)",
            bytes.len()
        );
        let left = temp_files(dir.path());
        if signal == libc::SIGINT {
            interrupted += 1;
            assert_eq!(status.status.code(), Some(130), "round {round}");
            // The handler removes the temporary file of a save under way. One
            // that the SIGKILL before left stays if the signal came before
            // the first save began (the next save removes it).
            let new: Vec<_> = left.iter().filter(|p| !before.contains(p)).collect();
            assert!(new.is_empty(), "round {round}: SIGINT left {new:?}");
        } else if left.iter().any(|p| !before.contains(p)) {
            killed_mid_save += 1;
        }
    }
    // The next save cleans up what a SIGKILL left.
    model::save(&models[1], &target).unwrap();
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(std::fs::read(&target).unwrap(), expected[1]);
    eprintln!(
        "{rounds} rounds: {} SIGKILLs ({killed_mid_save} left a temporary file, removed by the next save), {interrupted} SIGINTs",
        rounds - interrupted
    );
}

#[test]
fn ctrl_c_during_training_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.safetensors");
    let before = bytes_of(&Sequential::tutorial([1, 28, 28], 10, 5).unwrap());
    std::fs::write(&target, &before).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-sample");
    let child = Command::new(env!("CARGO_BIN_EXE_salient"))
        .args(["train", "--dataset", "mnist", "--epochs", "50", "--data"])
        .arg(&sample)
        .arg("--out")
        .arg(&target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(temp_files(dir.path()).is_empty());
}
