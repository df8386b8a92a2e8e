//! The CPUs this process may run on: its affinity mask (which already
//! reflects `taskset` and cgroup cpusets) and its cgroup CPU quota. Shards
//! are counted and pinned from it, so a container given two CPUs of a
//! 64-core host starts two shards pinned to those two.

/// The CPUs in this process's affinity mask, ascending; `None` when the
/// mask cannot be read.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is plain bits; sched_getaffinity fills at most
        // `size_of::<cpu_set_t>()` bytes of it for the calling thread.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return None;
        }
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `i` is below the set's capacity in bits.
        let cpus: Vec<usize> = (0..max).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect();
        (!cpus.is_empty()).then_some(cpus)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A kernel CPU list (`0-3,8,10-11`, as in `cpuset.cpus.effective`).
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// CPUs' worth of a cgroup v2 `cpu.max` (`quota period`, or `max period`),
/// rounded up; `None` when unlimited.
pub fn parse_cpu_max(s: &str) -> Option<usize> {
    let mut it = s.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next().unwrap_or("100000").parse().ok()?;
    quota_cpus(quota, period)
}

/// `ceil(quota / period)`, at least 1; `None` for a zero period.
fn quota_cpus(quota: u64, period: u64) -> Option<usize> {
    (period > 0 && quota > 0).then(|| quota.div_ceil(period).max(1) as usize)
}

/// The cgroup CPU quota in whole CPUs (v2 `cpu.max`, v1
/// `cpu.cfs_quota_us`/`cpu.cfs_period_us`) of this process's cgroup or an
/// ancestor, the smallest; `None` when none is set.
pub fn cgroup_cpu_quota() -> Option<usize> {
    use crate::agent::cgroup;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<usize> = None;
    let mut consider = |v: Option<usize>| {
        if let Some(v) = v {
            best = Some(best.map_or(v, |b| b.min(v)));
        }
    };
    if let Some(path) = cgroup::v2_path(&cgroup) {
        for dir in cgroup::ancestors("/sys/fs/cgroup", path) {
            consider(std::fs::read_to_string(dir.join("cpu.max")).ok().as_deref().and_then(parse_cpu_max));
        }
    }
    if let Some(path) = cgroup::v1_path(&cgroup, "cpu") {
        for dir in cgroup::ancestors("/sys/fs/cgroup/cpu", path) {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse::<i64>().ok();
            if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
                // -1: no quota.
                consider((q > 0 && p > 0).then(|| quota_cpus(q as u64, p as u64)).flatten());
            }
        }
    }
    best
}

/// The default shard count: one per allowed CPU, no more than the cgroup
/// quota (rounded up) allows, at least one.
pub fn default_shards(allowed: Option<&[usize]>, quota: Option<usize>) -> usize {
    let cpus = allowed.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), <[usize]>::len);
    quota.map_or(cpus, |q| cpus.min(q)).max(1)
}

/// The CPU shard `id` is pinned to: the `id`-th allowed CPU, wrapping.
pub fn shard_cpu(allowed: &[usize], id: usize) -> usize {
    if allowed.is_empty() {
        id
    } else {
        allowed[id % allowed.len()]
    }
}

/// The allowed CPUs no shard is pinned to: where the flusher, the
/// forwarders and the local API run, so a flush's compression never
/// delays a shard's reads (with the kernel's default socket buffer a
/// shard has about a millisecond before it drops). Empty when every
/// allowed CPU has a shard.
pub fn spare_cpus(allowed: &[usize], shards: usize) -> Vec<usize> {
    allowed.iter().copied().skip(shards).collect()
}

/// Restricts the calling thread (and the threads it spawns afterwards) to
/// `cpus`.
pub fn restrict_this_thread(cpus: &[usize]) -> std::io::Result<()> {
    restrict_thread(0, cpus)
}

/// Restricts thread `tid` of this process (0: the calling thread) to `cpus`.
pub fn restrict_thread(tid: i32, cpus: &[usize]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it for
        // indices below its capacity, which the filter ensures.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for &c in cpus.iter().filter(|&&c| c < max) {
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tid, cpus);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3,1-2,2"), Some(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn cpu_max_quota_rounds_up() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("100000 0"), None);
    }

    #[test]
    fn shards_follow_the_allowed_set_and_quota() {
        assert_eq!(default_shards(Some(&[2, 5, 7, 9]), None), 4);
        assert_eq!(default_shards(Some(&[2, 5, 7, 9]), Some(2)), 2);
        assert_eq!(default_shards(Some(&[3]), Some(8)), 1);
        assert_eq!(shard_cpu(&[2, 5, 7], 0), 2);
        assert_eq!(shard_cpu(&[2, 5, 7], 2), 7);
        assert_eq!(shard_cpu(&[2, 5, 7], 4), 5, "wraps around");
    }

    #[test]
    fn spare_cpus_are_those_without_a_shard() {
        assert_eq!(spare_cpus(&[2, 5, 7, 9], 1), vec![5, 7, 9]);
        assert_eq!(spare_cpus(&[2, 5], 2), Vec::<usize>::new());
        assert_eq!(spare_cpus(&[2, 5], 3), Vec::<usize>::new(), "more shards than CPUs: none spare");
    }

    #[test]
    fn this_process_has_an_allowed_cpu() {
        let cpus = allowed_cpus().expect("sched_getaffinity works on Linux");
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
