//! How an error is told to people: one line with every cause, for logs, status and the
//! command line; and a budget that keeps a flood of the same problem from flooding the
//! log. Every module may use it.

use std::error::Error;
use std::time::Duration;

use tokio::time::Instant;

/// `err` and its sources on one line, joined by `": "`.
pub fn error_chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// At most `burst` log lines per `window`; what is held back is counted and reported
/// with the next line let through.
#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    held_back: u64,
}

impl LogBudget {
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            window_start: None,
            used: 0,
            held_back: 0,
        }
    }

    /// Whether a line may be logged now; if so, with how many were held back before it.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.window_start.is_none_or(|t| now >= t + self.window) {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn log_lines_are_bounded_per_window_and_count_what_was_held_back() {
        let mut budget = LogBudget::new(2, Duration::from_secs(10));
        assert_eq!(budget.allow(), Some(0));
        assert_eq!(budget.allow(), Some(0));
        assert_eq!(budget.allow(), None);
        assert_eq!(budget.allow(), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(budget.allow(), Some(2));
        assert_eq!(budget.allow(), Some(0));
        assert_eq!(budget.allow(), None);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_on_the_line() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&err), "outer: inner");
    }
}
