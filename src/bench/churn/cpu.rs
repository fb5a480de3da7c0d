//! CPU time from `/proc`: of this process's threads of one name (the bench apiserver's
//! runtime names its threads, so its CPU is told apart from the agents' and the
//! writer's in the same process), of the whole process, and of its child processes of
//! one name (the etcd the bench started).

use std::time::Duration;

use anyhow::Context;

/// Linux reports thread times in clock ticks of 1/100 s (USER_HZ, fixed at 100 on
/// every architecture Linux exposes it to user space).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time of every live thread of this process named `name` (as
/// the kernel keeps it: at most 15 bytes).
pub fn threads_cpu(name: &str) -> anyhow::Result<Duration> {
    let mut ticks = 0;
    let tasks = std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")?;
    for task in tasks {
        let path = task
            .context("cannot read /proc/self/task")?
            .path()
            .join("stat");
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some((comm, used)) = parse_stat(&stat)
            && comm == name
        {
            ticks += used;
        }
    }
    Ok(from_ticks(ticks))
}

/// User plus system CPU time of this whole process.
pub fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
    let (_, ticks) = parse_stat(&stat).context("cannot parse /proc/self/stat")?;
    Ok(from_ticks(ticks))
}

/// User plus system CPU time of the processes named `name` that this process started,
/// directly or through one process between (the test kit's etcd runs under a reaper
/// shell); `None` when there is none: an etcd the bench did not start.
pub fn children_cpu(name: &str) -> anyhow::Result<Option<Duration>> {
    let me = std::process::id().to_string();
    let mut found = None;
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let path = entry.context("cannot read /proc")?.path();
        // Processes come and go; one that cannot be read is not ours any more.
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        if let Some((comm, ticks)) = parse_stat(&stat)
            && comm == name
            && let Some(parent) = parent(&stat)
            && (parent == me || grandparent_is(parent, &me))
        {
            *found.get_or_insert(Duration::ZERO) += from_ticks(ticks);
        }
    }
    Ok(found)
}

/// Whether process `pid`'s parent is `me`.
fn grandparent_is(pid: &str, me: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| parent(&stat) == Some(me))
}

fn from_ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The parent's pid (field 4) of a `stat` line.
fn parent(stat: &str) -> Option<&str> {
    stat.get(stat.rfind(')')? + 1..)?.split_whitespace().nth(1)
}

/// A task's name and its utime + stime in ticks, from its `stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // The name is in parentheses and may itself hold spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After the name: state (field 3) … utime (14), stime (15).
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_name_and_ticks() {
        let line = "4242 (bench (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0 99";
        assert_eq!(parse_stat(line), Some(("bench (x) y", 175)));
        assert_eq!(parent(line), Some("1"));
        assert_eq!(parse_stat("garbage"), None);
    }

    /// CPU time of the calling thread as the scheduler accounts it.
    fn scheduled() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let nanos = stat.split_whitespace().next().unwrap().parse().unwrap();
        Duration::from_nanos(nanos)
    }

    #[test]
    fn a_busy_named_thread_is_measured() {
        let busy = std::thread::Builder::new()
            .name("cpu-test-busy".into())
            .spawn(|| {
                // Spin until the scheduler's own account (schedstat, in nanoseconds: not
                // the ticks under test) says 300 ms ran: on a loaded machine 300 ms of
                // wall time may hold far less.
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while scheduled() < Duration::from_millis(300) {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "never scheduled"
                    );
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                threads_cpu("cpu-test-busy").unwrap()
            })
            .unwrap();
        let used = busy.join().unwrap();
        assert!(used >= Duration::from_millis(250), "{used:?}");
        assert_eq!(threads_cpu("no-such-thread").unwrap(), Duration::ZERO);
        assert!(process_cpu().unwrap() >= used);
        assert_eq!(children_cpu("no-such-child").unwrap(), None);
    }
}
