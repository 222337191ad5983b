//! doco-config
