//! doco-git
