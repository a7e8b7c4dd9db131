//! SDK errors -> the core's [`ErrorClass`], in one place.
//!
//! Models: how a Kinesis or DynamoDB call failed, as far as the core's
//! decisions go (retry with backoff, resubscribe after 5 s, release a shard,
//! treat a write as "may have applied"). Both SDKs share `SdkError` and the
//! service error codes, so one function maps both; [`crate::dynamo`] wraps it
//! into a `StoreError`, the Kinesis calls use it directly.
//!
//! Rules encoded: for requests that change state (`write`), an outcome the
//! client cannot know (timeout, connection failure after sending, an
//! unreadable response, a 5xx) is [`ErrorClass::Ambiguous`]; for reads it is
//! [`ErrorClass::Transient`]. Error messages carry codes and service
//! messages only, never credentials or request bodies.

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use kinesin_core::io::ErrorClass;

/// The HTTP status of a raw response, when the error came with one.
pub trait RawStatus {
    /// The status code, if any (event-stream messages have none).
    fn status(&self) -> Option<u16>;
}

impl RawStatus for aws_sdk_kinesis::config::http::HttpResponse {
    fn status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

impl RawStatus for aws_smithy_types::event_stream::RawMessage {
    fn status(&self) -> Option<u16> {
        None
    }
}

/// The class of a service error code (`...Exception`), `None` when the code
/// says nothing the core can use.
pub fn class_of_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "ConditionalCheckFailedException" => ErrorClass::ConditionalFailed,
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "KMSThrottlingException" => ErrorClass::Throttled,
        "LimitExceededException" => ErrorClass::LimitExceeded,
        "ResourceNotFoundException" => ErrorClass::ResourceNotFound,
        "ResourceInUseException" => ErrorClass::ResourceInUse,
        "ExpiredIteratorException" | "ExpiredNextTokenException" => ErrorClass::ExpiredIterator,
        "AccessDeniedException"
        | "KMSAccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException" => ErrorClass::AccessDenied,
        "ValidationException" | "SerializationException" | "InvalidArgumentException" => {
            ErrorClass::InvalidArgument
        }
        _ => return None,
    })
}

/// Classify an SDK error; the message names the code, HTTP status and the
/// service's message (for logs).
pub fn classify_sdk<E, R>(err: &SdkError<E, R>, write: bool) -> (ErrorClass, String)
where
    E: ProvideErrorMetadata,
    R: RawStatus,
{
    let unknown_outcome = ErrorClass::unknown_outcome(write);
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            let status = service.raw().status();
            let class = match class_of_code(code) {
                Some(class) => class,
                None if status.is_some_and(|s| s >= 500) => unknown_outcome,
                None => ErrorClass::Transient,
            };
            let message = service.err().message().unwrap_or("(no message)");
            let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            (class, format!("{code}{status}: {message}"))
        }
        SdkError::TimeoutError(_) => (unknown_outcome, "timed out".to_owned()),
        SdkError::DispatchFailure(failure) => {
            // A user error is raised before anything is sent.
            let class = if failure.is_user() {
                ErrorClass::Transient
            } else {
                unknown_outcome
            };
            let detail = failure
                .as_connector_error()
                .map(|e| e.to_string())
                .unwrap_or_default();
            (class, format!("request could not be completed {detail}"))
        }
        SdkError::ResponseError(_) => (unknown_outcome, "unreadable response".to_owned()),
        SdkError::ConstructionFailure(_) => (
            ErrorClass::Transient,
            "request could not be built (client configuration)".to_owned(),
        ),
        _ => (unknown_outcome, "unexpected SDK error".to_owned()),
    }
}

/// A failed Kinesis call: its class for the core, and what to log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Kinesis {operation} failed ({class:?}): {message}")]
pub struct KinesisError {
    /// For the core.
    pub class: ErrorClass,
    /// The API operation, e.g. "GetRecords".
    pub operation: &'static str,
    /// Code, status and service message.
    pub message: String,
}

impl KinesisError {
    /// Classify an SDK error of `operation` (Kinesis calls are reads or
    /// idempotent: never `Ambiguous`).
    pub fn from_sdk<E, R>(operation: &'static str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata,
        R: RawStatus,
    {
        let (class, message) = classify_sdk(err, false);
        KinesisError {
            class,
            operation,
            message,
        }
    }

    /// An error the driver found itself (a malformed response).
    pub fn new(class: ErrorClass, operation: &'static str, message: impl Into<String>) -> Self {
        KinesisError {
            class,
            operation,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_codes_map_to_the_core_classes() {
        assert_eq!(
            class_of_code("ExpiredIteratorException"),
            Some(ErrorClass::ExpiredIterator)
        );
        assert_eq!(
            class_of_code("InvalidArgumentException"),
            Some(ErrorClass::InvalidArgument)
        );
        assert_eq!(
            class_of_code("KMSThrottlingException"),
            Some(ErrorClass::Throttled)
        );
        assert_eq!(
            class_of_code("ResourceInUseException"),
            Some(ErrorClass::ResourceInUse)
        );
        assert_eq!(class_of_code("InternalFailure"), None);
    }
}
