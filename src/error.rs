//! One error type for the whole crate, grouped by kind.
//!
//! Every message names where the problem is (an op, a file, a layer) and what was
//! expected, so that a user can act on it without reading the source.

use std::path::PathBuf;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `salient`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two tensors whose shapes do not fit together at an op.
    #[error("{op}: {what}: {lhs_name} has shape {lhs:?}, {rhs_name} has shape {rhs:?}")]
    Shape {
        /// The op or layer that refused the shapes, e.g. `conv2d`.
        op: &'static str,
        /// What should have matched.
        what: String,
        /// Name of the first operand, e.g. `input`.
        lhs_name: &'static str,
        /// Shape of the first operand.
        lhs: Vec<usize>,
        /// Name of the second operand, e.g. `weight`.
        rhs_name: &'static str,
        /// Shape of the second operand.
        rhs: Vec<usize>,
    },

    /// An argument outside what an op or command accepts.
    #[error("{op}: {detail}")]
    InvalidArgument {
        /// The op, layer or command.
        op: &'static str,
        /// What was wrong and what was expected.
        detail: String,
    },

    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A file whose content is not what its format requires.
    #[error("{}: {field}: expected {expected}, found {found}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The field or part of the file, e.g. `magic number` or `image 3`.
        field: String,
        /// What the format requires.
        expected: String,
        /// What the file holds.
        found: String,
    },

    /// A size declared by a file or an argument that is above a limit of
    /// [`Limits`](crate::limits::Limits), refused before anything was
    /// allocated for it.
    #[error("{subject}: {what}, above the limit of {limit}{}", raise_hint(*.raise))]
    TooLarge {
        /// The file, layer or argument.
        subject: String,
        /// What it declares.
        what: String,
        /// The limit.
        limit: String,
        /// The flag that raises the limit, if there is one.
        raise: Option<&'static str>,
    },

    /// Training produced a loss that is NaN or infinite.
    #[error("training stopped: the loss became {loss} at epoch {epoch}, batch {batch} (try a lower learning rate)")]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        batch: usize,
        /// The offending value.
        loss: f32,
    },
}

fn raise_hint(flag: Option<&str>) -> String {
    flag.map(|f| format!(" (raise it with {f})"))
        .unwrap_or_default()
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            field: field.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}
