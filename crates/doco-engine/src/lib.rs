//! doco-engine
