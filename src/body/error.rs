//! Why a response body through the layer ended before its end.

use std::{error::Error, fmt, sync::Arc};

/// The errors a body may fail with, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why a [`StampedeBody`](crate::StampedeBody) ended before its end: the
/// inner service's body failed (for every request reading it, when it was
/// shared by a flight), or a request reading a shared body fell further
/// behind the others than the layer keeps.
///
/// Cloning it is cheap: one failure of the origin's body reaches each
/// request of the flight as a clone of the same error, whose
/// [`source`](Error::source) is the inner service's own error.
#[derive(Clone)]
pub struct BodyError {
    kind: ErrorKind,
}

#[derive(Clone)]
enum ErrorKind {
    Inner(Arc<dyn Error + Send + Sync>),
    FellBehind,
}

impl BodyError {
    pub(crate) fn inner(error: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::Inner(Arc::from(error.into())),
        }
    }

    pub(crate) fn fell_behind() -> Self {
        Self {
            kind: ErrorKind::FellBehind,
        }
    }

    /// Whether the request fell behind the others reading a shared body, or
    /// joined one that was given up as nobody read it any more (rather than
    /// the inner service's body failing).
    pub fn is_fell_behind(&self) -> bool {
        matches!(self.kind, ErrorKind::FellBehind)
    }
}

impl fmt::Debug for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Inner(error) => f.debug_tuple("BodyError::Inner").field(error).finish(),
            ErrorKind::FellBehind => f.write_str("BodyError::FellBehind"),
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Inner(_) => f.write_str("the inner service's response body failed"),
            ErrorKind::FellBehind => f.write_str("fell too far behind the other readers of a shared body"),
        }
    }
}

impl Error for BodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            ErrorKind::Inner(error) => Some(&**error),
            ErrorKind::FellBehind => None,
        }
    }
}
