//! Presentation only: pure functions from measured or decoded data to text.

pub mod bytes;
pub mod compare;
