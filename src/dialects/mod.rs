//! Other APIs' dialects served on SiliconFlow's: pure translations of
//! requests, answers and streams (serde and `crate::sse` only), tested on
//! fixtures; the proxy wires them into its request path.

pub mod count_tokens;
pub mod json;
pub mod overflow;
pub mod responses;
