//! Control-plane nodes in network namespaces of their own, joined pairwise
//! by veth links that a test cuts and heals with `ip` (this kernel has no
//! netem). Node `i` serves on 10.77.0.i (on its loopback), reached by the
//! other nodes over the pair links and by the test (in the root namespace)
//! over a management link of its own, which a cut leaves alone: a test can
//! still ask a cut-off node what it thinks.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// The namespaces and links; removed when dropped.
pub struct NodeNetwork {
    tag: String,
    nodes: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the namespaces and management links of earlier runs whose
/// process is gone (a run killed before it could drop its network): their
/// addresses would clash with a new run's.
fn remove_stale() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("vg") else {
            return false;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !pid.is_empty()
            && pid.parse::<u32>().ok() != Some(std::process::id() % 100_000)
            && !Path::new(&format!("/proc/{pid}")).exists()
    };
    let listed = |args: &[&str]| -> Vec<String> {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    for ns in listed(&["netns", "list"]).iter().filter(|n| stale(n)) {
        let _ = ip(&["netns", "del", ns]);
    }
    for link in listed(&["-br", "link"])
        .iter()
        .map(|l| l.split('@').next().unwrap_or(l).to_string())
    {
        if stale(&link) {
            let _ = ip(&["link", "del", &link]);
        }
    }
}

impl NodeNetwork {
    /// `nodes` namespaces (at most 9), each pair linked.
    pub fn create(nodes: u8) -> Result<NodeNetwork, String> {
        assert!((1..=9).contains(&nodes), "1 to 9 nodes");
        remove_stale();
        let net = NodeNetwork {
            tag: format!("vg{}", std::process::id() % 100_000),
            nodes,
        };
        for i in 1..=nodes {
            let ns = net.ns(i);
            let mgmt = net.mgmt_link(i);
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.0.{i}/32"),
                "dev",
                "lo",
            ])?;
            ip(&[
                "link", "add", &mgmt, "type", "veth", "peer", "name", "m0", "netns", &ns,
            ])?;
            ip(&["addr", "add", &format!("10.78.{i}.1/30"), "dev", &mgmt])?;
            ip(&["link", "set", &mgmt, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.78.{i}.2/30"),
                "dev",
                "m0",
            ])?;
            ip(&["-n", &ns, "link", "set", "m0", "up"])?;
            ip(&[
                "route",
                "replace",
                &format!("10.77.0.{i}/32"),
                "via",
                &format!("10.78.{i}.2"),
            ])?;
        }
        for i in 1..=nodes {
            for j in (i + 1)..=nodes {
                ip(&[
                    "link",
                    "add",
                    &format!("p{j}"),
                    "netns",
                    &net.ns(i),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("p{i}"),
                    "netns",
                    &net.ns(j),
                ])?;
                ip(&[
                    "-n",
                    &net.ns(i),
                    "addr",
                    "add",
                    &format!("10.79.{i}{j}.1/30"),
                    "dev",
                    &format!("p{j}"),
                ])?;
                ip(&[
                    "-n",
                    &net.ns(j),
                    "addr",
                    "add",
                    &format!("10.79.{i}{j}.2/30"),
                    "dev",
                    &format!("p{i}"),
                ])?;
            }
        }
        net.heal()?;
        Ok(net)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: u8) -> String {
        format!("{}-{i}", self.tag)
    }

    /// Where node `i` serves.
    pub fn ip(&self, i: u8) -> IpAddr {
        IpAddr::from([10, 77, 0, i])
    }

    fn mgmt_link(&self, i: u8) -> String {
        format!("{}m{i}", self.tag)
    }

    /// Cuts node `i` off from every other node (the test still reaches it).
    pub fn cut(&self, i: u8) -> Result<(), String> {
        for j in (1..=self.nodes).filter(|j| *j != i) {
            ip(&["-n", &self.ns(i), "link", "set", &format!("p{j}"), "down"])?;
        }
        Ok(())
    }

    /// Every pair link up, with its routes (a link taken down loses them).
    pub fn heal(&self) -> Result<(), String> {
        for i in 1..=self.nodes {
            for j in (i + 1)..=self.nodes {
                ip(&["-n", &self.ns(i), "link", "set", &format!("p{j}"), "up"])?;
                ip(&["-n", &self.ns(j), "link", "set", &format!("p{i}"), "up"])?;
                ip(&[
                    "-n",
                    &self.ns(i),
                    "route",
                    "replace",
                    &format!("10.77.0.{j}/32"),
                    "via",
                    &format!("10.79.{i}{j}.2"),
                ])?;
                ip(&[
                    "-n",
                    &self.ns(j),
                    "route",
                    "replace",
                    &format!("10.77.0.{i}/32"),
                    "via",
                    &format!("10.79.{i}{j}.1"),
                ])?;
            }
        }
        Ok(())
    }

    /// `program` with `args`, run in node `i`'s namespace.
    pub fn command_in(&self, i: u8, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i)]).arg(program);
        cmd
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            // The namespace's links (and their peers) go with it.
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.mgmt_link(i)]);
        }
    }
}
