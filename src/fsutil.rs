//! Reading and writing files so that a hostile file cannot exhaust memory and a
//! crash, a kill or a full disk never leaves a half-written file where the user
//! had a good one.
//!
//! - [`read_bounded`] reads only regular files, and only up to a size limit:
//!   a FIFO, a device such as `/dev/zero` or a folder is refused before it is
//!   opened, so nothing blocks or reads forever.
//! - [`write_atomic`] writes to a temporary file beside the target, named
//!   `.<name>.<random>.salient-tmp`, flushes it to disk, renames it over the
//!   target and flushes the folder. Readers see the old file or the new one,
//!   never a part. The temporary file is removed on every error path, on
//!   SIGINT and SIGTERM once `remove_temp_files_on_signal` is installed (with
//!   the `cli` feature), and,
//!   if a SIGKILL left one, by the next write of the same file.
//! - A new file's mode follows the umask (`0666 & !umask`, as `touch` would
//!   make it); a file written over keeps its mode. A symlink is written
//!   through: its target gets the new content and the link stays.
//! - [`check_output_file`] and [`check_output_dir`] try a path before the
//!   work that will write to it, so a bad `--out` costs seconds, not a training
//!   run.

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// How every temporary file of ours ends.
pub const TEMP_SUFFIX: &str = ".salient-tmp";

/// What a file system entry is, for messages: `a folder`, `a FIFO`, ...
fn describe_kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Checks that `path` is a regular file (following symlinks) and returns its
/// size in bytes. Looking does not open it, so a FIFO cannot block.
pub fn regular_file_len(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "file type",
            "a regular file",
            describe_kind(&meta),
        ));
    }
    Ok(meta.len())
}

/// Reads all of a regular file of at most `limit` bytes; `what` says what the
/// limit is for (`a checkpoint of at most 64,000,000 parameters`).
///
/// The size is checked before reading, and the read stops one byte past the
/// limit in case the file grows meanwhile.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let len = regular_file_len(path)?;
    let too_large = |found: u64| Error::TooLarge {
        subject: path.display().to_string(),
        what: format!("the file has {} bytes", crate::limits::thousands(found)),
        limit: format!("{} bytes for {what}", crate::limits::thousands(limit)),
        raise: None,
    };
    if len > limit {
        return Err(too_large(len));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The file a write to `path` lands in: `path` itself, or the target of the
/// symlink chain that starts at it (which need not exist yet).
pub fn write_target(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    // As the kernel's own bound on symlink chains (ELOOP).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&current).map_err(|e| Error::io(&current, e))?;
                current = match current.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(Error::invalid(
        "output",
        format!("{}: too many levels of symbolic links", path.display()),
    ))
}

/// The folder of `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks, before any work, that a file can be written at `path`: it names a
/// file (not a folder, nor `dir/.`), whatever is there now is a regular file,
/// and its folder exists (it is created) and takes new files.
pub fn check_output_file(path: &Path) -> Result<()> {
    let text = path.as_os_str().to_string_lossy();
    let names_folder = text.is_empty()
        || text.ends_with('/')
        || text.ends_with("/.")
        || text == "."
        || text.ends_with("/..")
        || text == "..";
    if names_folder {
        return Err(Error::invalid(
            "output",
            format!("{}: expected a file name, found a folder", path.display()),
        ));
    }
    let target = write_target(path)?;
    if let Ok(meta) = std::fs::metadata(&target) {
        if !meta.is_file() {
            return Err(Error::invalid(
                "output",
                format!(
                    "{}: expected a file to write, found {}",
                    path.display(),
                    describe_kind(&meta)
                ),
            ));
        }
    }
    let dir = folder_of(&target);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    probe_folder(dir)
}

/// Checks, before any work, that `dir` is (or can be made) a folder that takes
/// new files.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(dir) {
        if !meta.is_dir() {
            return Err(Error::invalid(
                "output",
                format!("{}: expected a folder, found a file", dir.display()),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    probe_folder(dir)
}

/// Creates and removes a temporary file in `dir`.
fn probe_folder(dir: &Path) -> Result<()> {
    tempfile::Builder::new()
        .prefix(".probe.")
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| Error::io(dir, e))
}

/// The files being written now, for the signal handler to remove their
/// temporary files. A target is registered before its temporary file is
/// created, so no temporary file exists unregistered.
static LIVE: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Registers a file being written with [`LIVE`] while the write lasts.
struct Live((PathBuf, String));

impl Live {
    fn new(dir: &Path, name: &str) -> Self {
        let entry = (dir.to_path_buf(), name.to_string());
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        Live(entry)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = live.iter().position(|e| e == &self.0) {
            live.swap_remove(i);
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: removes the temporary files of the files
/// being written, says so, and exits with status 130. Files already written
/// are untouched. The command line installs this; a library user may.
#[cfg(feature = "cli")]
pub fn remove_temp_files_on_signal() -> Result<()> {
    ctrlc::set_handler(|| {
        let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        for (dir, name) in live.iter() {
            remove_stale_temp_files(dir, name);
        }
        eprintln!("salient: interrupted");
        std::process::exit(130);
    })
    .map_err(|e| Error::invalid("signals", e.to_string()))
}

/// Removes the temporary files of `name` in `dir`: those an earlier write left
/// (only a SIGKILL or a power cut can), or, from the signal handler, the one
/// being written.
fn remove_stale_temp_files(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let ours = file_name.starts_with(&prefix) && file_name.ends_with(TEMP_SUFFIX);
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The mode a new version of `target` gets: the old one's, or `0666` less the
/// umask for a new file (the kernel applies the umask on creation).
#[cfg(unix)]
fn new_file_permissions(target: &Path) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_file() => meta.permissions(),
        _ => std::fs::Permissions::from_mode(0o666),
    }
}

/// Writes a file atomically; see the module documentation.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let target = write_target(path)?;
    let dir = folder_of(&target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::invalid(
                "output",
                format!("{}: expected a file name, found a folder", path.display()),
            )
        })?;
    remove_stale_temp_files(dir, &name);
    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{name}.");
    builder.prefix(&prefix).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    builder.permissions(new_file_permissions(&target));
    let live = Live::new(dir, &name);
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(path, e))?;
    {
        let mut buffered = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut buffered).map_err(|e| Error::io(path, e))?;
        buffered.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(&target).map_err(|e| Error::io(path, e.error))?;
    drop(live);
    sync_folder(dir).map_err(|e| Error::io(dir, e))
}

/// Flushes a folder's entries to disk, so a rename in it survives a power cut.
/// File systems that cannot sync a folder are not an error.
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => Err(e),
        _ => Ok(()),
    }
}

/// [`write_atomic`] for bytes already in memory.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_regular_files_are_refused_without_opening() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_bounded(dir.path(), 100, "a test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a folder"), "{err}");
        let err = read_bounded(Path::new("/dev/zero"), 100, "a test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a device"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert_eq!(read_bounded(&path, 10, "a test").unwrap().len(), 10);
        let err = read_bounded(&path, 9, "a test").unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }

    #[test]
    fn symlinks_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.bin");
        let link = dir.path().join("link.bin");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.bin", &link).unwrap();
        write_bytes_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn stale_temp_files_go_and_modes_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let stale = dir.path().join(".m.safetensors.abc123.salient-tmp");
        let other = dir.path().join(".other.abc123.salient-tmp");
        std::fs::write(&stale, b"left by a kill").unwrap();
        std::fs::write(&other, b"another file's").unwrap();
        write_bytes_atomic(&path, b"1").unwrap();
        assert!(!stale.exists() && other.exists());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_bytes_atomic(&path, b"2").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn output_checks_refuse_folders_before_work() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            dir.path().to_path_buf(),
            dir.path().join("."),
            PathBuf::from(format!("{}/", dir.path().join("x").display())),
        ] {
            assert!(check_output_file(&bad).is_err(), "{}", bad.display());
        }
        assert!(check_output_file(&dir.path().join("new/sub/m.safetensors")).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(check_output_dir(&file).is_err());
        assert!(check_output_dir(&dir.path().join("figures")).is_ok());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("figures"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty());
    }
}
