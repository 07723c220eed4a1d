//! Test support.
pub mod fake;
pub mod image;
pub mod outpost;
pub mod real;
pub mod tools;
