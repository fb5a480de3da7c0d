//! The command line: one clap `Args` per subcommand.
