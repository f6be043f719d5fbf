//! The `salient` command line: train the tutorial's CNN, evaluate it, predict,
//! and draw saliency maps. The commands live in [`salient::cli`]; this file
//! parses the arguments and turns every error into one line and a non-zero exit.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use salient::cli::{self, Cli};

fn main() -> ExitCode {
    // A bug must still read as one line, not a backtrace. Output read by a
    // program that stopped reading (`salient predict ... | head`) is not a
    // bug: `println!` finds the pipe closed, and salient ends as a C tool
    // killed by SIGPIPE would, silently with status 128 + 13.
    std::panic::set_hook(Box::new(|info| {
        if closed_stdout(info) {
            std::process::exit(141);
        }
        eprintln!("salient: internal error: {info}")
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors: clap prints them as usual.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            eprintln!("salient: error: {} (see --help)", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    // A Ctrl-C or a kill during a save leaves no temporary file behind.
    if let Err(e) = salient::fsutil::remove_temp_files_on_signal() {
        eprintln!("salient: warning: {e}");
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("salient: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// clap's multi-line usage error as one line: the message without its `error: `
/// prefix, the usage and the help hint, with line breaks turned into spaces.
fn one_line(message: &str) -> String {
    let message = message.trim_start_matches("error: ");
    let message = message.split("\n\nUsage:").next().unwrap_or(message);
    let message = message
        .split("\n\nFor more information")
        .next()
        .unwrap_or(message);
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a panic is `println!` failing on a closed pipe: the standard
/// library's message, `failed printing to stdout: ` and the system's text for
/// EPIPE (Rust never sets a locale, so it is the C locale's).
fn closed_stdout(info: &std::panic::PanicHookInfo<'_>) -> bool {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}
