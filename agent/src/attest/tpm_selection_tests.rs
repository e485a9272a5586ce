use super::*;

#[test]
fn the_four_forms_parse_and_print_back() {
    for (given, expected) in [
        ("off", TpmSelection::Off),
        ("auto", TpmSelection::Auto),
        (
            "device:/dev/tpmrm0",
            TpmSelection::Device("/dev/tpmrm0".into()),
        ),
        (
            "swtpm:host=127.0.0.1,port=2321",
            TpmSelection::Swtpm {
                host: "127.0.0.1".into(),
                port: 2321,
            },
        ),
    ] {
        let parsed: TpmSelection = given.parse().unwrap();
        assert_eq!(parsed, expected, "{given}");
        assert_eq!(parsed.to_string(), given);
    }
    assert_eq!(
        "swtpm:port=9,host=tpm-1.lab".parse::<TpmSelection>(),
        Ok(TpmSelection::Swtpm {
            host: "tpm-1.lab".into(),
            port: 9
        })
    );
    assert_eq!(TpmSelection::default(), TpmSelection::Auto);
}

#[test]
fn bad_values_say_what_is_wrong() {
    for (given, says) in [
        ("", "expected off, auto"),
        ("tpm0", "expected off, auto"),
        ("device:", "absolute path"),
        ("device:dev/tpm0", "absolute path"),
        ("swtpm:", "not key=value"),
        ("swtpm:host=127.0.0.1", "no port"),
        ("swtpm:port=2321", "no host"),
        ("swtpm:host=127.0.0.1,port=0", "not in 1-65534"),
        ("swtpm:host=127.0.0.1,port=65535", "not in 1-65534"),
        ("swtpm:host=127.0.0.1,port=http", "not in 1-65534"),
        ("swtpm:host=a b,port=1", "not a host name"),
        ("swtpm:host=h,port=1,path=/x", "unknown option \"path\""),
    ] {
        let e = given.parse::<TpmSelection>().unwrap_err().to_string();
        assert!(e.contains(says), "{given:?}: {e}");
        assert!(e.starts_with("--tpm "), "{given:?}: {e}");
    }
}

#[test]
fn auto_is_the_resource_manager_when_it_exists() {
    let rm = TpmTarget::Device(DEFAULT_TPM_DEVICE.into());
    assert_eq!(TpmSelection::Auto.resolve_with(|_| true), Some(rm.clone()));
    assert_eq!(TpmSelection::Auto.resolve_with(|_| false), None);
    assert_eq!(TpmSelection::Off.resolve_with(|_| true), None);
    // An explicit device is used even where it does not exist (opening it
    // then says why).
    assert_eq!(
        TpmSelection::Device("/dev/tpm9".into()).resolve_with(|_| false),
        Some(TpmTarget::Device("/dev/tpm9".into()))
    );
    assert_eq!(rm.to_string(), "device:/dev/tpmrm0");
}
