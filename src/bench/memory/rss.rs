//! A process's resident memory, as the kernel reports it.

use anyhow::{Context, bail};

/// `VmRSS` of process `pid` (`None`: this process), in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_vm_rss(&status).with_context(|| format!("{path} has no VmRSS line"))
}

/// The `VmRSS:   1234 kB` line's figure.
fn parse_vm_rss(status: &str) -> anyhow::Result<u64> {
    let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) else {
        bail!("no VmRSS line");
    };
    let mut words = line.split_whitespace().skip(1);
    match (words.next().map(str::parse::<u64>), words.next()) {
        (Some(Ok(kib)), Some("kB")) => Ok(kib),
        _ => bail!("unexpected VmRSS line {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_rss_line_is_read_in_kib() {
        let status = "Name:\tfleetmesh\nVmPeak:\t  9000 kB\nVmRSS:\t   4242 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status).unwrap(), 4242);
        assert!(parse_vm_rss("VmRSS: lots\n").is_err());
        assert!(parse_vm_rss("Name: x\n").is_err());
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(rss_kib(None).unwrap() > 0);
        assert!(rss_kib(Some(std::process::id())).unwrap() > 0);
    }
}
