//! proto: see and measure how network protocols behave.
