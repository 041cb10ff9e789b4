//! EC2's errors: a code (`InvalidGroup.NotFound`), a message, and the HTTP status EC2 sends with
//! it (400 for the client's mistakes, 401 for `AuthFailure`, 5xx for the server's). The AWS CLI
//! prints them as `An error occurred (CODE) when calling the ACTION operation: MESSAGE`.

use std::fmt;

/// An EC2 error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// A client error (HTTP 400) with EC2's code.
    pub fn client(code: &'static str, message: impl fmt::Display) -> ApiError {
        ApiError { status: 400, code, message: message.to_string() }
    }

    /// `AuthFailure` (HTTP 401, as EC2 sends it).
    pub fn auth(message: impl fmt::Display) -> ApiError {
        ApiError { status: 401, code: "AuthFailure", message: message.to_string() }
    }

    /// `InvalidParameterValue`.
    pub fn invalid(message: impl fmt::Display) -> ApiError {
        ApiError::client("InvalidParameterValue", message)
    }

    /// `MissingParameter`, naming the parameter as it is sent.
    pub fn missing(parameter: &str) -> ApiError {
        ApiError::client("MissingParameter", format!("The request must contain the parameter {parameter}"))
    }

    /// `InvalidGroup.NotFound`.
    pub fn group_not_found(group: &str) -> ApiError {
        ApiError::client("InvalidGroup.NotFound", format!("The security group '{group}' does not exist"))
    }

    /// `InternalError` (HTTP 500): the server failed; nothing changed unless the message says so.
    pub fn internal(message: impl fmt::Display) -> ApiError {
        ApiError { status: 500, code: "InternalError", message: message.to_string() }
    }

    /// `Unavailable` (HTTP 503): try again (the AWS CLI and SDKs retry it by themselves).
    pub fn unavailable(message: impl fmt::Display) -> ApiError {
        ApiError { status: 503, code: "Unavailable", message: message.to_string() }
    }
}
