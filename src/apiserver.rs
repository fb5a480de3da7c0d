//! Wiring of one member's apiserver.
