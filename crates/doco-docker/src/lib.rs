//! doco-docker
