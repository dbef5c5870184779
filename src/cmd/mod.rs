//! One file per subcommand.

pub mod lab;
