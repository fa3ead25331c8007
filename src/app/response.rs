//! What a handler decides, before the ACK stage turns it into an acknowledgment.

use std::fmt;

use tower::BoxError;

use crate::ack::{AckCode, Diagnostic, ErrorCode, Reply};

/// The business outcome of one message, before it becomes an ACK.
///
/// Handlers return anything [`IntoResponse`]; middleware sees and may change a `Response` on the
/// way out. Only the ACK stage builds the acknowledgment message itself (MSH, MSA, ERR), from the
/// inbound message's header, so handlers never write an MSH by hand.
///
/// A handler that answers with a message of its own (an RSP to a query) returns a [`Reply`]
/// instead ([`Response::reply`]): the server checks it and sends it in the ACK's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: Status,
    diagnostics: Vec<Diagnostic>,
    /// Sent instead of the automatic ACK, when set.
    reply: Option<Reply>,
    /// The error a handler returned, kept from its [`HandlerError`] for middleware to log.
    source: Option<Cause>,
}

/// A handler's error, carried by its [`Response`]. Never compared (two responses are equal
/// whatever errors they came from) and never printed by `Debug`: its text may hold anything.
#[derive(Clone)]
struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl PartialEq for Cause {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cause {}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cause(..)")
    }
}

/// The acknowledgment family a [`Response`] asks for.
///
/// In original mode these become AA/AE/AR; in enhanced mode (MSH-15 present) CA/CE/CR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// The message was accepted (AA / CA).
    Accepted,
    /// The message was processed but failed, the sender may fix and resend (AE / CE).
    Error,
    /// The message was rejected (AR / CR).
    Rejected,
}

impl Status {
    /// The acknowledgment code for this status: original mode (AA/AE/AR) or enhanced mode
    /// accept acknowledgments (CA/CE/CR).
    pub fn ack_code(self, enhanced: bool) -> AckCode {
        match (self, enhanced) {
            (Status::Accepted, false) => AckCode::AA,
            (Status::Error, false) => AckCode::AE,
            (Status::Rejected, false) => AckCode::AR,
            (Status::Accepted, true) => AckCode::CA,
            (Status::Error, true) => AckCode::CE,
            (Status::Rejected, true) => AckCode::CR,
        }
    }
}

impl Response {
    /// Accepted (AA), no diagnostics.
    pub fn accept() -> Self {
        Self::new(Status::Accepted, Vec::new())
    }

    /// Answers with `reply` instead of the automatic ACK (status accepted). The server checks
    /// it is HL7 and frameable before sending it, and answers AE (ERR-3 = 207) instead when it
    /// is not; it is sent whatever MSH-15 asks, since the handler chose to answer. Diagnostics
    /// of the response are not written into it.
    pub fn reply(reply: Reply) -> Self {
        Self {
            reply: Some(reply),
            ..Self::accept()
        }
    }

    /// Application error (AE) with one ERR segment carrying `code` and `text`.
    ///
    /// The text goes to the sending system in ERR; never put patient data in it.
    pub fn error(code: ErrorCode, text: impl Into<String>) -> Self {
        Self::new(Status::Error, vec![Diagnostic::error(code, text)])
    }

    /// Application reject (AR) with one ERR segment carrying `code` and `text`.
    ///
    /// The text goes to the sending system in ERR; never put patient data in it.
    pub fn reject(code: ErrorCode, text: impl Into<String>) -> Self {
        Self::new(Status::Rejected, vec![Diagnostic::error(code, text)])
    }

    /// A response with the given status and diagnostics.
    pub fn new(status: Status, diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            status,
            diagnostics,
            reply: None,
            source: None,
        }
    }

    /// The error the handler returned, when it returned one that converted into a
    /// [`HandlerError`] (with `?`, or as `Err(..)`): a database error, an `io::Error`, an
    /// `anyhow::Error`. The partner got a generic text; this is the real cause, for a middleware
    /// of yours to log or count. The library never logs it: an error's text may carry patient
    /// data, so log it only where that is allowed.
    ///
    /// ```
    /// use mllp::app::{Next, Request, Response, from_fn};
    ///
    /// let log_causes = from_fn(|req: Request, next: Next| async move {
    ///     let response: Response = next.run(req).await;
    ///     if let Some(cause) = response.error_source() {
    ///         eprintln!("handler failed: {cause}");
    ///     }
    ///     response
    /// });
    /// # drop(log_causes);
    /// ```
    pub fn error_source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_ref().map(|cause| &*cause.0)
    }

    /// Adds a diagnostic (an ERR segment); warnings on an accepted message give AA with ERR-4 = W.
    #[must_use]
    pub fn with_diagnostic(mut self, diagnostic: Diagnostic) -> Self {
        self.diagnostics.push(diagnostic);
        self
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Changes the status (for middleware that rewrites outcomes on the way out).
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
    }

    /// The diagnostics, one ERR segment each.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The diagnostics, for middleware that adds or removes some.
    pub fn diagnostics_mut(&mut self) -> &mut Vec<Diagnostic> {
        &mut self.diagnostics
    }

    /// Whether the message was accepted.
    pub fn is_accepted(&self) -> bool {
        self.status == Status::Accepted
    }

    /// The reply sent instead of the automatic ACK, if the handler gave one.
    pub fn reply_message(&self) -> Option<&Reply> {
        self.reply.as_ref()
    }

    /// Takes the reply out, so that the automatic ACK is sent (middleware that replaces it).
    pub fn take_reply(&mut self) -> Option<Reply> {
        self.reply.take()
    }

    pub(crate) fn into_parts(self) -> (Status, Vec<Diagnostic>) {
        (self.status, self.diagnostics)
    }
}

impl Default for Response {
    fn default() -> Self {
        Self::accept()
    }
}

/// A handler's failure: an HL7 error code (table 0357) and a text for the sender.
///
/// `HandlerError::internal` and the `?` conversion from any error give AE with ERR-3 = 207;
/// [`HandlerError::new`] gives AE with another code; [`HandlerError::reject`] gives AR.
///
/// Everything that converts into a [`tower::BoxError`] converts into a `HandlerError`, with `?`
/// or as a handler's `Err(..)`: any `std::error::Error + Send + Sync + 'static`, a
/// `Box<dyn Error + Send + Sync>`, an `anyhow::Error`, a `String` or a `&'static str`. Such a
/// conversion keeps the error as the [`source`](Self::source), and its [`Response`] keeps it as
/// [`Response::error_source`], for your own logging (a middleware can read it), but the text
/// sent to the partner is the generic "application internal error", even for a `String`: an
/// error's text may carry database details or patient data, and ERR text leaves the building.
/// To send a text on purpose, say so: [`HandlerError::internal`], [`new`](Self::new) or
/// [`reject`](Self::reject).
///
/// ```
/// use mllp::app::{HandlerError, Request};
///
/// async fn store(_req: Request) -> Result<(), HandlerError> {
///     let boxed: Result<(), Box<dyn std::error::Error + Send + Sync>> = Err("db down".into());
///     boxed?; // AE 207 "application internal error"; "db down" stays in `source()`
///     Ok(())
/// }
/// // A closure may return its own error type directly: a `String` here.
/// let _router = mllp::app::Router::new()
///     .route("ADT^A01", store)
///     .route("ORU^R01", |_req: Request| async { Err::<(), _>(String::from("no bed")) });
/// ```
pub struct HandlerError {
    status: Status,
    code: ErrorCode,
    text: String,
    /// Where in the message (ERR-2), when the handler said. Boxed: a handler's
    /// `Result<_, HandlerError>` stays small.
    location: Option<Box<crate::hl7::Location>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl HandlerError {
    /// AE with ERR-3 = 207 (application internal error) and the given text.
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::ApplicationInternalError, text)
    }

    /// AE with the given code and text.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            status: Status::Error,
            code,
            text: text.into(),
            location: None,
            source: None,
        }
    }

    /// AR with the given code and text: the message is refused, not retried as is.
    pub fn reject(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            status: Status::Rejected,
            code,
            text: text.into(),
            location: None,
            source: None,
        }
    }

    /// Says where in the message the problem is: ERR-2 (error location) of the answer, as
    /// [`Diagnostic::at`] does, so that `?` can return a located reject.
    ///
    /// ```
    /// use mllp::ack::ErrorCode;
    /// use mllp::app::{HandlerError, Request};
    /// use mllp::hl7::Location;
    ///
    /// async fn admit(req: Request) -> Result<(), HandlerError> {
    ///     let mrn = req.message().text("PID-3.1")?.unwrap_or_default();
    ///     if mrn.is_empty() {
    ///         return Err(
    ///             HandlerError::reject(ErrorCode::RequiredFieldMissing, "PID-3 is empty")
    ///                 .at(Location::new("PID", 1).field(3)),
    ///         );
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = admit;
    /// ```
    #[must_use]
    pub fn at(mut self, location: crate::hl7::Location) -> Self {
        self.location = Some(Box::new(location));
        self
    }

    /// The HL7 error code sent in ERR-3.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The text sent to the partner.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether this error rejects the message (AR) rather than reporting an error (AE).
    pub fn is_reject(&self) -> bool {
        self.status == Status::Rejected
    }

    /// The error this one was converted from with `?`, if any. Never sent to the partner.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("status", &self.status)
            .field("code", &self.code)
            .field("text", &self.text)
            .field("has_source", &self.source.is_some())
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.ack_code(false),
            self.code.code(),
            self.text
        )
    }
}

// HandlerError deliberately does not implement `std::error::Error` (nor convert into a
// `BoxError`), so that everything that converts into a `BoxError` converts into it with `?`
// (the anyhow pattern); without that the blanket impl below would overlap `From<T> for T`.
impl<E> From<E> for HandlerError
where
    E: Into<BoxError>,
{
    fn from(error: E) -> Self {
        Self {
            status: Status::Error,
            code: ErrorCode::ApplicationInternalError,
            text: "application internal error".to_owned(),
            location: None,
            source: Some(error.into()),
        }
    }
}

impl From<HandlerError> for Response {
    fn from(error: HandlerError) -> Self {
        Response {
            source: error.source.map(|e| Cause(std::sync::Arc::from(e))),
            ..Response::new(error.status, {
                let diagnostic = Diagnostic::error(error.code, error.text);
                vec![match error.location {
                    Some(location) => diagnostic.at(*location),
                    None => diagnostic,
                }]
            })
        }
    }
}

/// Anything a handler or middleware may return.
///
/// `()` and `Ok(())` accept (AA); [`Response`] is used as is; [`HandlerError`] becomes AE or AR;
/// `Result<T, E>` is `T` or, for `Err`, the error converted into a [`HandlerError`] (anything
/// `Into<tower::BoxError>`: AE 207 with a generic text). A handler that never returns (it only
/// panics: `async { panic!(..) }`) is accepted too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's answer",
    label = "not an answer",
    note = "a handler or middleware returns `()` (AA), `Response`, `HandlerError` (AE/AR), or `Result<T, E>` where `T` is one of those and `E` is `HandlerError`, `String`, `&'static str`, any `std::error::Error + Send + Sync + 'static`, `Box<dyn Error + Send + Sync>` or `anyhow::Error`"
)]
pub trait IntoResponse {
    /// Converts into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        Response::reply(self)
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::accept()
    }
}

impl IntoResponse for HandlerError {
    fn into_response(self) -> Response {
        self.into()
    }
}

/// Names the never type `!` on stable Rust (`<fn() -> ! as ..>::Output`), so that a handler
/// whose body only panics (an `async` block of type `!` under edition 2024's never-type
/// fallback) is a handler.
trait HasOutput {
    type Output;
}

impl<T> HasOutput for fn() -> T {
    type Output = T;
}

type Never = <fn() -> ! as HasOutput>::Output;

// The impl is for `!` itself; the private trait only names it.
#[allow(private_interfaces)]
impl IntoResponse for Never {
    fn into_response(self) -> Response {
        self
    }
}

impl<T, E> IntoResponse for Result<T, E>
where
    T: IntoResponse,
    E: Into<HandlerError>,
{
    fn into_response(self) -> Response {
        match self {
            Ok(value) => value.into_response(),
            Err(error) => error.into().into_response(),
        }
    }
}

/// What a middleware ([`from_fn`](crate::app::from_fn)) may return: a [`Response`] (usually
/// the one `next.run(req).await` gave), a [`Reply`], a [`HandlerError`], or a `Result` of
/// those. Not `()`: a handler's `()` means AA, and a middleware that ended without returning
/// the inner response would answer AA to every message, whatever the handler said.
///
/// ```compile_fail
/// use mllp::app::{Next, Request, from_fn};
///
/// // Forgets to return the inner response: refused at compile time.
/// let audit = from_fn(|req: Request, next: Next| async move {
///     let _response = next.run(req).await;
/// });
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a middleware's answer",
    label = "not a middleware's answer",
    note = "a middleware returns the `Response` of `next.run(req).await` (or a `Response`, `Reply` or `HandlerError` of its own, or a `Result` of those); `()` would answer AA to every message, whatever the handler said"
)]
pub trait MiddlewareResponse: IntoResponse {}

impl MiddlewareResponse for Response {}
impl MiddlewareResponse for Reply {}
impl MiddlewareResponse for HandlerError {}
#[allow(private_interfaces)]
impl MiddlewareResponse for Never {}
impl<T, E> MiddlewareResponse for Result<T, E>
where
    T: MiddlewareResponse,
    E: Into<HandlerError>,
{
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `?` on an arbitrary error gives AE 207 with a generic text; the cause is kept, not sent.
    #[test]
    fn converted_errors_hide_their_text() {
        fn fails() -> Result<(), HandlerError> {
            Err(std::io::Error::other("db said: patient SMITH locked"))?;
            Ok(())
        }
        let err = fails().unwrap_err();
        assert_eq!(err.code(), ErrorCode::ApplicationInternalError);
        assert_eq!(err.text(), "application internal error");
        assert!(err.source().unwrap().to_string().contains("SMITH"));
        let resp = Err::<(), _>(err).into_response();
        assert_eq!(resp.status(), Status::Error);
        assert!(!format!("{resp:?}").contains("SMITH"));
    }

    /// Strings, boxed errors and any `Into<BoxError>` become AE 207 with the generic text; the
    /// text is kept as the source only.
    #[test]
    fn strings_and_boxed_errors_become_ae_with_a_generic_text() {
        let cases: Vec<HandlerError> = vec![
            String::from("SMITH not found").into(),
            "SMITH not found".into(),
            Box::<dyn std::error::Error + Send + Sync>::from("SMITH not found").into(),
            std::io::Error::other("SMITH not found").into(),
        ];
        for err in cases {
            assert_eq!(err.code(), ErrorCode::ApplicationInternalError);
            assert!(!err.is_reject());
            assert_eq!(err.text(), "application internal error");
            assert_eq!(err.source().unwrap().to_string(), "SMITH not found");
            let resp = Err::<(), _>(err).into_response();
            assert_eq!(resp.status(), Status::Error);
            assert!(!format!("{resp:?}").contains("SMITH"));
        }
        fn question_mark() -> Result<(), HandlerError> {
            Err(Box::<dyn std::error::Error + Send + Sync>::from("x"))?;
            Ok(())
        }
        assert!(question_mark().is_err());
        assert_eq!(Err::<(), _>("no").into_response().status(), Status::Error);
    }

    /// Reject maps to AR, plain errors to AE, unit to AA; enhanced mode gives the C codes.
    #[test]
    fn statuses_map_to_ack_codes() {
        assert_eq!(().into_response().status(), Status::Accepted);
        let r: Result<(), HandlerError> =
            Err(HandlerError::reject(ErrorCode::UnsupportedEventCode, "no"));
        assert_eq!(r.into_response().status(), Status::Rejected);
        assert_eq!(Status::Rejected.ack_code(false), AckCode::AR);
        assert_eq!(Status::Error.ack_code(true), AckCode::CE);
        assert_eq!(Status::Accepted.ack_code(true), AckCode::CA);
    }
}
