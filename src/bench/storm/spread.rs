//! How reconnects spread over time after an apiserver restart: per second since the
//! restart began, how many dial attempts were made, by how many distinct agents, and how
//! many connections came up.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// One second of the storm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Seconds since the restart began: this bin is `[second, second + 1)`.
    pub second: u64,
    /// Dial attempts made in it.
    pub attempts: u64,
    /// Distinct agents that dialed in it: what the storm target limits.
    pub agents: u64,
    /// Streams that opened in it.
    pub connected: u64,
}

/// One agent's reconnects, as offsets from the restart.
#[derive(Clone, Debug, Default)]
pub struct AgentReconnects {
    /// When it dialed again, once per attempt.
    pub attempts: Vec<Duration>,
    /// When a stream opened again.
    pub connected: Vec<Duration>,
}

/// The histogram, one entry per second from 0 to the last second with any activity
/// (seconds without any are listed too, with zeros).
pub fn per_second(agents: &[AgentReconnects]) -> Vec<Second> {
    let mut bins: BTreeMap<u64, Second> = BTreeMap::new();
    for agent in agents {
        let mut dialed_in: Vec<u64> = agent.attempts.iter().map(Duration::as_secs).collect();
        for s in &dialed_in {
            bins.entry(*s).or_default().attempts += 1;
        }
        dialed_in.dedup();
        for s in dialed_in {
            bins.entry(s).or_default().agents += 1;
        }
        for at in &agent.connected {
            bins.entry(at.as_secs()).or_default().connected += 1;
        }
    }
    let last = bins.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|second| Second {
            second,
            ..bins.remove(&second).unwrap_or_default()
        })
        .collect()
}

/// The most distinct agents that dialed within any one-second window (sliding, so a
/// burst straddling two bins of the histogram is not split).
pub fn busiest_window(agents: &[AgentReconnects]) -> u64 {
    // Every window that matters starts at some attempt: (time, agent) sorted by time.
    let mut attempts: Vec<(Duration, usize)> = agents
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.attempts.iter().map(move |t| (*t, i)))
        .collect();
    attempts.sort();
    let mut in_window: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut start, mut busiest) = (0, 0);
    for end in 0..attempts.len() {
        *in_window.entry(attempts[end].1).or_default() += 1;
        while attempts[end].0 - attempts[start].0 >= Duration::from_secs(1) {
            let agent = attempts[start].1;
            if let Some(n) = in_window.get_mut(&agent) {
                *n -= 1;
                if *n == 0 {
                    in_window.remove(&agent);
                }
            }
            start += 1;
        }
        busiest = busiest.max(in_window.len());
    }
    busiest as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    fn mk_agent(attempts: &[u64], connected: &[u64]) -> AgentReconnects {
        AgentReconnects {
            attempts: ms(attempts),
            connected: ms(connected),
        }
    }

    #[test]
    fn attempts_agents_and_connections_are_counted_per_second() {
        let agents = [
            // Dialed twice in second 0 (failed, then connected), once more in second 2.
            mk_agent(&[200, 600, 2_100], &[600, 2_100]),
            mk_agent(&[2_500], &[2_500]),
        ];
        let bins = per_second(&agents);
        let got: Vec<(u64, u64, u64, u64)> = bins
            .iter()
            .map(|b| (b.second, b.attempts, b.agents, b.connected))
            .collect();
        assert_eq!(got, [(0, 2, 1, 1), (1, 0, 0, 0), (2, 2, 2, 2)]);
        assert!(per_second(&[]).iter().all(|b| b.attempts == 0));
    }

    #[test]
    fn the_busiest_window_slides_across_bins() {
        // Three agents within 300 ms that straddle the 1 s boundary: no bin holds all
        // three, the sliding window does.
        let agents = [
            mk_agent(&[900], &[]),
            mk_agent(&[950, 1_000], &[]),
            mk_agent(&[1_150], &[]),
            mk_agent(&[3_000], &[]),
        ];
        assert!(per_second(&agents).iter().all(|b| b.agents < 3));
        assert_eq!(busiest_window(&agents), 3);
        assert_eq!(busiest_window(&[mk_agent(&[0, 1_000, 2_000], &[])]), 1);
        assert_eq!(busiest_window(&[]), 0);
    }
}
