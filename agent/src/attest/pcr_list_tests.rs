use super::*;

#[test]
fn lists_and_ranges_parse_sorted_and_once() {
    let all: Vec<u32> = (0..=7).collect();
    assert_eq!("0-7".parse::<PcrList>().unwrap().indices(), all);
    assert_eq!("0,1,2,3,4,5,6,7".parse::<PcrList>().unwrap().indices(), all);
    assert_eq!(
        "7, 0-3,3".parse::<PcrList>().unwrap().indices(),
        [0, 1, 2, 3, 7]
    );
    assert_eq!("23".parse::<PcrList>().unwrap().to_string(), "23");
    assert_eq!(
        PcrList::from_indices(&[10, 0, 10]).unwrap().indices(),
        [0, 10]
    );
}

#[test]
fn bad_lists_say_why() {
    for (given, says) in [
        ("", "an empty item"),
        ("0,,1", "an empty item"),
        ("x", "\"x\" is not a PCR index"),
        ("1-", "\"\" is not a PCR index"),
        ("7-0", "runs backwards"),
        ("24", "PCR 24 is out of range (0-23)"),
        ("0-99", "PCR 99 is out of range"),
        ("-1", "is not a PCR index"),
    ] {
        let e = given.parse::<PcrList>().unwrap_err().to_string();
        assert!(e.contains(says), "{given:?}: {e}");
    }
    assert_eq!(PcrList::from_indices(&[]), Err(PcrListError::Empty));
    assert_eq!(
        PcrList::from_indices(&[1, u32::MAX]),
        Err(PcrListError::OutOfRange(u32::MAX))
    );
}

#[test]
fn banks_by_name_and_by_algorithm_id() {
    for bank in [
        PcrBank::Sha1,
        PcrBank::Sha256,
        PcrBank::Sha384,
        PcrBank::Sha512,
    ] {
        assert_eq!(PcrBank::from_alg_id(bank.alg_id() as u32), Ok(bank));
        assert_eq!(bank.name().parse::<PcrBank>(), Ok(bank));
    }
    assert_eq!(PcrBank::from_alg_id(0x000b), Ok(PcrBank::Sha256));
    assert_eq!(PcrBank::Sha256.digest_len(), 32);
    let e = PcrBank::from_alg_id(0x0012).unwrap_err().to_string();
    assert!(e.contains("0x0012"), "{e}");
    assert!("md5".parse::<PcrBank>().is_err());
}
