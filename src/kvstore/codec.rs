//! Cilium's kvstore value formats.
