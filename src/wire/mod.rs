//! Small HTTP pieces shared by the Authenticator and the network front
//! doors: the boxed body type, JSON and error responses, path
//! normalization, hop-by-hop header handling, `Host` checks and an IO
//! wrapper that watches reads. Imports nothing from the crate.
// Most of it serves the network front doors; the Authenticator uses the
// error body and path normalization.
#![cfg_attr(not(feature = "server"), allow(dead_code, unused_imports))]

/// Case counts for the crate's property tests: `default`, or
/// `PROPTEST_CASES` when set (CI's longer fuzzing step sets it).
#[cfg(test)]
pub(crate) fn proptest_config(default: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

mod body;
mod headers;
mod io;
mod path;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub(crate) use self::body::{
    Body, BoxError, boxed, empty, error, error_chain, error_response, full, json,
};
pub(crate) use self::headers::{is_valid_host, remove_hop_by_hop, request_host, wants_upgrade};
pub(crate) use self::io::{OnRead, ReadHook};
pub(crate) use self::path::{normalize_path, percent_decode};
