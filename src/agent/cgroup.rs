//! Where this process's cgroup files are: its paths in
//! `/proc/self/cgroup` (v2 unified or a v1 controller's hierarchy) and the
//! directories whose limits apply to it.

/// The cgroup v2 path of this process (`0::/path` in `/proc/self/cgroup`).
pub fn v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(str::trim)
}

/// The cgroup v1 path of this process's hierarchy holding `controller`
/// (`N:cpu,cpuacct:/path`).
pub fn v1_path<'a>(proc_self_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls.split(',').any(|c| c == controller).then_some(path.trim())
    })
}

/// `root/path` and each of its parents up to `root`, deepest first.
pub fn ancestors(root: &str, path: &str) -> Vec<std::path::PathBuf> {
    let mut p = std::path::PathBuf::from(root);
    let mut out = vec![p.clone()];
    for part in path.split('/').filter(|c| !c.is_empty() && *c != "." && *c != "..") {
        p.push(part);
        out.push(p.clone());
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_from_proc_self_cgroup() {
        let v2 = "0::/system.slice/edgestat.service\n";
        assert_eq!(v2_path(v2), Some("/system.slice/edgestat.service"));
        assert_eq!(v1_path(v2, "memory"), None);
        let v1 = "12:cpu,cpuacct:/a\n4:memory:/process_api/5e42\n3:cpuset:/\n0::/\n";
        assert_eq!(v1_path(v1, "memory"), Some("/process_api/5e42"));
        assert_eq!(v1_path(v1, "cpu"), Some("/a"));
        assert_eq!(v1_path(v1, "cpuacct"), Some("/a"));
        assert_eq!(v1_path(v1, "cpus"), None);
        assert_eq!(v2_path(v1), Some("/"), "hybrid: the unified hierarchy line");
    }

    #[test]
    fn ancestors_walk_up_to_the_root() {
        let a = ancestors("/sys/fs/cgroup", "/a/b");
        let a: Vec<String> = a.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(a, vec!["/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a", "/sys/fs/cgroup"]);
        assert_eq!(ancestors("/sys/fs/cgroup", "/").len(), 1);
    }
}
