//! The API's error type: an HTTP status and a message that says what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, body: ErrorBody { error: message.into(), diagnostics: Vec::new() } }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A file failed validation: every diagnostic, one per line.
    pub fn invalid_file(file: &str, errors: &config::Errors) -> ApiError {
        let diagnostics: Vec<String> = errors.0.iter().map(|d| d.to_string()).collect();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: format!(
                    "{file} is not valid ({} error(s)); nothing was changed",
                    diagnostics.len()
                ),
                diagnostics,
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.body.error, self.status)
    }
}

impl std::error::Error for ApiError {}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> ApiError {
        if err.is_write_failure() {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the data directory cannot be written ({err}); nothing was changed: free \
                     space there (`cutover status` says since when), then retry"
                ),
            );
        }
        ApiError::internal(err.to_string())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> ApiError {
        ApiError::internal(format!("stored state could not be read: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
