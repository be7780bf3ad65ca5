//! Resident memory and CPU time of a process, from `/proc`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProcSample {
    /// `VmRSS`, MiB.
    pub rss_mb: f64,
    /// `VmHWM` (peak resident), MiB.
    pub peak_mb: f64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    };
    Some(ProcSample {
        rss_mb: kib("VmRSS:")? / 1024.0,
        peak_mb: kib("VmHWM:")? / 1024.0,
    })
}

/// Busy and total jiffies of the whole machine, from the first line of
/// `/proc/stat` (idle and iowait count as not busy).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine(stat.lines().next()?)
}

fn parse_machine(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already
    // counted in user).
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// User plus system CPU time, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ticks(&stat)
}

fn parse_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces; fields are counted after its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_fields() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(parse_ticks(stat), Some(300));
    }

    #[test]
    fn reads_machine_line() {
        let line = "cpu  100 5 50 800 20 3 2 0 0 0";
        assert_eq!(parse_machine(line), Some((160, 980)));
        assert!(machine_ticks().is_some());
    }

    #[test]
    fn samples_itself() {
        let me = sample(std::process::id()).expect("own /proc status");
        assert!(me.rss_mb > 0.0 && me.peak_mb >= me.rss_mb);
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
