//! `salient explore`: the explorer in the browser ([`crate::explore`]).
//!
//! ```text
//! cargo run --release -- demo          # trains a model on the bundled sample
//! cargo run --release -- explore       # serves http://127.0.0.1:8000/ for it
//! ```

use std::path::{Path, PathBuf};

use clap::Args;

use super::demo;
use crate::data::{self, DatasetKind, Split};
use crate::error::{Error, Result};
use crate::explore::api::{Explorer, Samples};
use crate::explore::Server;
use crate::model;

/// Where `salient demo` leaves its checkpoint by default.
pub const DEMO_CHECKPOINT: &str = "out/demo/mnist-sample.safetensors";

/// `salient explore`.
#[derive(Debug, Clone, Args)]
pub struct ExploreArgs {
    /// A checkpoint (`salient train`, `salient import`) or an ONNX model (`.onnx`).[default: the one `salient demo` wrote, out/demo/mnist-sample.safetensors].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// mnist, cifar10 or folder: where the page's test images come from.
    #[arg(long, requires = "data")]
    pub dataset: Option<DatasetKind>,
    /// The data set's folder (its test split is offered on the page).
    #[arg(long, requires = "dataset")]
    pub data: Option<PathBuf>,
    /// The port to listen on (0: any free port).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The address to listen on. Anything but a loopback address lets other
    /// machines use the explorer (and the model): you are warned.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Open the page in the default browser.
    #[arg(long)]
    pub open: bool,
    /// Serve this file as the page instead of the built-in one, read afresh at
    /// every request (for working on the page).
    #[arg(long, hide = true)]
    pub page: Option<PathBuf>,
}

/// The model, its name and its samples, from the arguments or the demo.
pub fn explorer(args: &ExploreArgs) -> Result<Explorer> {
    let (path, samples_from) = match (&args.model, &args.dataset, &args.data) {
        (Some(path), Some(kind), Some(dir)) => (path.clone(), Some((*kind, dir.clone()))),
        (Some(path), _, _) => (path.clone(), None),
        (None, kind, dir) => {
            let path = PathBuf::from(DEMO_CHECKPOINT);
            if !path.is_file() {
                return Err(Error::invalid(
                    "explore",
                    format!(
                        "no --model given, and no model from `salient demo` in {DEMO_CHECKPOINT}; \
                         make one with `cargo run --release -- demo` (a few minutes) or pass --model"
                    ),
                ));
            }
            let samples = match (kind, dir) {
                (Some(kind), Some(dir)) => Some((*kind, dir.clone())),
                _ => Some((DatasetKind::Mnist, demo::sample_dir()?)),
            };
            (path, samples)
        }
    };
    let model = model::load_model(&path)?;
    let samples = match samples_from {
        Some((kind, dir)) => Some(samples(kind, &dir)?),
        None => None,
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let explorer = Explorer::new(model, name, samples)?;
    Ok(match &args.page {
        Some(page) => explorer.with_page_file(page.clone()),
        None => explorer,
    })
}

fn samples(kind: DatasetKind, dir: &Path) -> Result<Samples> {
    let set = data::load(kind, dir, Split::Test)?;
    Ok(Samples {
        source: format!("{}, test split", dir.display()),
        set,
    })
}

/// Serves the page until the process is stopped.
pub fn run(args: &ExploreArgs) -> Result<()> {
    let explorer = explorer(args)?;
    let name = explorer.info().model;
    let server = Server::bind(&format!("{}:{}", args.bind, args.port), explorer)?;
    if !args.bind.is_loopback() {
        eprintln!(
            "warning: listening on {}: any machine that can reach this address can use the explorer",
            args.bind
        );
    }
    let shown = match args.bind.is_unspecified() {
        true => format!("127.0.0.1:{}", server.addr().port()),
        false => server.addr().to_string(),
    };
    let url = format!("http://{shown}/");
    println!("Exploring {name} at {url}  (Ctrl-C stops)");
    if args.open {
        open_in_browser(&url);
    }
    server.run();
    Ok(())
}

/// Asks the desktop to open `url`; says so if it cannot.
fn open_in_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        vec!["open"]
    } else if cfg!(windows) {
        vec!["cmd", "/C", "start", ""]
    } else {
        vec!["xdg-open"]
    };
    let spawned = std::process::Command::new(opener[0])
        .args(&opener[1..])
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "could not open a browser ({}: {e}); open {url} yourself",
            opener[0]
        );
    }
}
