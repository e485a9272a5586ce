use super::*;

#[test]
fn tcp_and_unix_addresses_parse() {
    assert_eq!(
        "tcp:127.0.0.1:8001".parse(),
        Ok(ListenAddress::Tcp("127.0.0.1:8001".into()))
    );
    assert_eq!(
        "tcp:[::1]:0".parse(),
        Ok(ListenAddress::Tcp("[::1]:0".into()))
    );
    assert_eq!(
        "tcp:localhost:9".parse(),
        Ok(ListenAddress::Tcp("localhost:9".into()))
    );
    assert_eq!(
        "unix:/run/vigil/s.sock".parse(),
        Ok(ListenAddress::Unix("/run/vigil/s.sock".into()))
    );
    assert_eq!(ListenAddress::Unix("/a".into()).to_string(), "unix:/a");
}

#[test]
fn malformed_addresses_are_refused() {
    for bad in [
        "127.0.0.1:8001",
        "tcp:8001",
        "tcp:host:99999",
        "tcp::1",
        "tcp:h:",
        "udp:1:2",
    ] {
        assert!(bad.parse::<ListenAddress>().is_err(), "{bad}");
    }
    assert_eq!(
        "unix:".parse::<ListenAddress>(),
        Err(ListenAddressError::EmptyPath)
    );
}
