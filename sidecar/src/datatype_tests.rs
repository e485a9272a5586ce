use super::*;

#[test]
fn every_datatype_round_trips_through_its_kserve_name_and_ort_type() {
    for dt in ALL_DATATYPES {
        assert_eq!(Datatype::from_kserve(dt.kserve_name()), Ok(dt));
        assert_eq!(Datatype::from_ort(dt.to_ort()), Some(dt));
        assert_eq!(dt.to_string(), dt.kserve_name());
    }
}

#[test]
fn element_sizes_are_the_wire_sizes() {
    let sizes: Vec<(Datatype, usize)> = ALL_DATATYPES
        .iter()
        .map(|d| (*d, d.element_bytes()))
        .collect();
    assert_eq!(
        sizes,
        vec![
            (Datatype::Bool, 1),
            (Datatype::Uint8, 1),
            (Datatype::Uint16, 2),
            (Datatype::Uint32, 4),
            (Datatype::Uint64, 8),
            (Datatype::Int8, 1),
            (Datatype::Int16, 2),
            (Datatype::Int32, 4),
            (Datatype::Int64, 8),
            (Datatype::Fp16, 2),
            (Datatype::Bf16, 2),
            (Datatype::Fp32, 4),
            (Datatype::Fp64, 8),
        ]
    );
}

#[test]
fn bytes_and_unknown_names_are_refused_by_name() {
    assert_eq!(Datatype::from_kserve("BYTES"), Err(DatatypeError::Bytes));
    let err = Datatype::from_kserve("fp32").unwrap_err();
    assert!(
        err.to_string().starts_with("unknown datatype \"fp32\""),
        "{err}"
    );
    // A huge name is echoed cut.
    let long = "X".repeat(10_000);
    assert!(Datatype::from_kserve(&long).unwrap_err().to_string().len() < 300);
}

#[test]
fn types_the_sidecar_does_not_serve_have_no_datatype() {
    assert_eq!(Datatype::from_ort(TensorElementType::String), None);
    assert_eq!(Datatype::from_ort(TensorElementType::Float8E4M3FN), None);
    assert_eq!(Datatype::from_ort(TensorElementType::Int4), None);
}

#[test]
fn typed_contents_fields_follow_kserve() {
    assert_eq!(Datatype::Int8.contents_field(), Some("int_contents"));
    assert_eq!(Datatype::Uint16.contents_field(), Some("uint_contents"));
    assert_eq!(Datatype::Int64.contents_field(), Some("int64_contents"));
    assert_eq!(Datatype::Fp16.contents_field(), None);
    assert_eq!(Datatype::Bf16.contents_field(), None);
}
