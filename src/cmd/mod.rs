//! One file per subcommand: arguments → servers/clients/measurements → output.

pub mod bench;
pub mod client;
pub mod codec;
pub mod compare;
pub mod hol;
pub mod lab;
pub mod load;
pub mod serve;
