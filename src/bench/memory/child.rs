//! A probe process seen from the bench: started with its arguments, waited for line by
//! line, measured by its pid, and ended by closing its stdin.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::rss::rss_kib;
use crate::bench::correctness::Correctness;

/// How long a probe may take to exit once its stdin closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A running probe; killed if dropped.
pub struct ProbeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl ProbeProcess {
    /// Runs `exe bench probe <args>` with warnings only on its stderr.
    pub fn spawn(exe: &Path, args: &[String]) -> anyhow::Result<Self> {
        let what = format!("probe {}", args.first().map_or("", String::as_str));
        let mut child = Command::new(exe)
            .args(["--log", "warn", "bench", "probe"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} for the {what}", exe.display()))?;
        let stdout = child.stdout.take().context("the probe has no stdout")?;
        Ok(Self {
            stdin: child.stdin.take(),
            lines: BufReader::new(stdout).lines(),
            child,
            what,
        })
    }

    /// The rest of the probe's next line, which must start with `word`.
    pub async fn expect(&mut self, word: &str, timeout: Duration) -> anyhow::Result<String> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .with_context(|| format!("the {} said nothing within {timeout:?}", self.what))?
            .with_context(|| format!("cannot read from the {}", self.what))?;
        match line {
            Some(line) => match line.strip_prefix(word) {
                Some(rest) => Ok(rest.trim().to_string()),
                None => bail!("the {} said {line:?}, not {word:?}", self.what),
            },
            None => bail!("the {} ended before it said {word:?}", self.what),
        }
    }

    /// The probe's resident memory now.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self
            .child
            .id()
            .with_context(|| format!("the {} has ended", self.what))?;
        rss_kib(Some(pid))
    }

    /// Asks the probe to compare what it holds with what it should.
    pub async fn check(&mut self, timeout: Duration) -> anyhow::Result<Correctness> {
        let stdin = self.stdin.as_mut().context("the probe's stdin is closed")?;
        stdin
            .write_all(b"check\n")
            .await
            .with_context(|| format!("cannot write to the {}", self.what))?;
        stdin.flush().await?;
        let json = self.expect("correctness", timeout).await?;
        serde_json::from_str(&json)
            .with_context(|| format!("the {} sent a bad correctness {json:?}", self.what))
    }

    /// Closes its stdin and waits for it to exit (killing it after a grace period);
    /// fails if it exited unsuccessfully.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(status) => {
                let status =
                    status.with_context(|| format!("cannot wait for the {}", self.what))?;
                if !status.success() {
                    bail!("the {} failed: {status}", self.what);
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await.ok();
                bail!("the {} did not exit within {EXIT_GRACE:?}", self.what)
            }
        }
    }
}
