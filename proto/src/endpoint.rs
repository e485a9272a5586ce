//! Control-plane endpoints as clients are given them: one or several
//! `http(s)://HOST:PORT`, comma-separated (the nodes of a cluster, tried
//! in turn).

/// The endpoints of a comma-separated list, trimmed, empty items dropped.
pub fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The host part of an endpoint (scheme, port and path removed, the
/// brackets of an IPv6 literal too): the name a server's certificate must
/// carry.
pub fn host_of(endpoint: &str) -> String {
    let rest = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default().to_string();
    }
    authority.split(':').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_and_hosts_come_out() {
        assert_eq!(
            split_endpoints(" https://a:7700, https://b:7700 ,,"),
            vec!["https://a:7700", "https://b:7700"]
        );
        assert_eq!(host_of("https://cp1.example:7700"), "cp1.example");
        assert_eq!(host_of("https://10.0.0.5:7700/x"), "10.0.0.5");
        assert_eq!(host_of("https://[::1]:7700"), "::1");
        assert_eq!(host_of("http://localhost"), "localhost");
    }
}
