//! Kubernetes objects → model ([`convert`]), and the sources that read them.
