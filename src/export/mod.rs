//! The apiserver's writer: desired state → store.
