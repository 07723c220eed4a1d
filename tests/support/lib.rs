//! Test support.
pub mod image;
pub mod real;
pub mod tools;
