use super::*;
use crate::datatype::ALL_DATATYPES;
use crate::test_runtime::runtime;

/// Three elements of each datatype, with their little-endian bytes.
fn sample(datatype: Datatype) -> (TensorData, Vec<u8>) {
    match datatype {
        Datatype::Bool => (TensorData::Bool(vec![true, false, true]), vec![1, 0, 1]),
        Datatype::Uint8 => (TensorData::Uint8(vec![0, 7, 255]), vec![0, 7, 255]),
        Datatype::Uint16 => (
            TensorData::Uint16(vec![1, 0x0203, u16::MAX]),
            vec![1, 0, 3, 2, 255, 255],
        ),
        Datatype::Uint32 => (
            TensorData::Uint32(vec![1, 0x0102_0304, u32::MAX]),
            [1u32, 0x0102_0304, u32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Datatype::Uint64 => (
            TensorData::Uint64(vec![1, 1 << 40, u64::MAX]),
            [1u64, 1 << 40, u64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Datatype::Int8 => (TensorData::Int8(vec![-128, 0, 127]), vec![0x80, 0, 0x7f]),
        Datatype::Int16 => (
            TensorData::Int16(vec![-2, 0, i16::MAX]),
            vec![0xfe, 0xff, 0, 0, 0xff, 0x7f],
        ),
        Datatype::Int32 => (
            TensorData::Int32(vec![-1, 5, i32::MIN]),
            [-1i32, 5, i32::MIN]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Datatype::Int64 => (
            TensorData::Int64(vec![-1, 5, i64::MAX]),
            [-1i64, 5, i64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Datatype::Fp16 => (
            TensorData::Fp16(vec![
                f16::from_f32(1.0),
                f16::from_f32(-2.5),
                f16::from_f32(0.0),
            ]),
            vec![0x00, 0x3c, 0x00, 0xc1, 0, 0],
        ),
        Datatype::Bf16 => (
            TensorData::Bf16(vec![
                bf16::from_f32(1.0),
                bf16::from_f32(-2.0),
                bf16::from_f32(0.5),
            ]),
            vec![0x80, 0x3f, 0x00, 0xc0, 0x00, 0x3f],
        ),
        Datatype::Fp32 => (
            TensorData::Fp32(vec![1.5, -0.25, f32::MAX]),
            [1.5f32, -0.25, f32::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        Datatype::Fp64 => (
            TensorData::Fp64(vec![1.5, -0.25, f64::MIN_POSITIVE]),
            [1.5f64, -0.25, f64::MIN_POSITIVE]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    }
}

#[test]
fn raw_bytes_decode_and_encode_both_ways_for_every_datatype() {
    for dt in ALL_DATATYPES {
        let (data, bytes) = sample(dt);
        assert_eq!(bytes.len(), 3 * dt.element_bytes(), "{dt}");
        assert_eq!(TensorData::from_le_bytes(dt, &bytes), data, "{dt}");
        assert_eq!(data.to_le_bytes(), bytes, "{dt}");
        assert_eq!(data.datatype(), dt);
        assert_eq!(data.len(), 3);
    }
}

#[test]
fn a_bool_byte_other_than_zero_is_true() {
    assert_eq!(
        TensorData::from_le_bytes(Datatype::Bool, &[0, 1, 2, 255]),
        TensorData::Bool(vec![false, true, true, true])
    );
}

#[test]
fn typed_contents_decode_for_every_datatype_that_has_a_field() {
    let contents = InferTensorContents {
        bool_contents: vec![true, false],
        int_contents: vec![-3, 100],
        int64_contents: vec![i64::MIN, 4],
        uint_contents: vec![0, 200],
        uint64_contents: vec![u64::MAX, 1],
        fp32_contents: vec![0.5, -1.0],
        fp64_contents: vec![0.25, 2.0],
        bytes_contents: vec![],
    };
    let expected = [
        (Datatype::Bool, TensorData::Bool(vec![true, false])),
        (Datatype::Int8, TensorData::Int8(vec![-3, 100])),
        (Datatype::Int16, TensorData::Int16(vec![-3, 100])),
        (Datatype::Int32, TensorData::Int32(vec![-3, 100])),
        (Datatype::Int64, TensorData::Int64(vec![i64::MIN, 4])),
        (Datatype::Uint8, TensorData::Uint8(vec![0, 200])),
        (Datatype::Uint16, TensorData::Uint16(vec![0, 200])),
        (Datatype::Uint32, TensorData::Uint32(vec![0, 200])),
        (Datatype::Uint64, TensorData::Uint64(vec![u64::MAX, 1])),
        (Datatype::Fp32, TensorData::Fp32(vec![0.5, -1.0])),
        (Datatype::Fp64, TensorData::Fp64(vec![0.25, 2.0])),
    ];
    for (dt, data) in expected {
        assert_eq!(TensorData::contents_len(dt, &contents), Some(2), "{dt}");
        assert_eq!(TensorData::from_contents(dt, &contents), Ok(data), "{dt}");
    }
}

#[test]
fn a_typed_value_out_of_its_datatypes_range_is_refused_by_index() {
    let contents = InferTensorContents {
        int_contents: vec![1, 300],
        uint_contents: vec![70_000],
        ..Default::default()
    };
    assert_eq!(
        TensorData::from_contents(Datatype::Int8, &contents)
            .unwrap_err()
            .to_string(),
        "int_contents[1] = 300 is out of range for INT8"
    );
    assert_eq!(
        TensorData::from_contents(Datatype::Uint16, &contents)
            .unwrap_err()
            .to_string(),
        "uint_contents[0] = 70000 is out of range for UINT16"
    );
    assert!(TensorData::from_contents(Datatype::Int16, &contents).is_ok());
}

#[test]
fn fp16_and_bf16_travel_raw_only() {
    for dt in [Datatype::Fp16, Datatype::Bf16] {
        let contents = InferTensorContents::default();
        assert_eq!(TensorData::contents_len(dt, &contents), None);
        assert_eq!(
            TensorData::from_contents(dt, &contents),
            Err(ContentsError::RawOnly(dt))
        );
    }
}

#[test]
fn every_datatype_goes_into_onnx_runtime_and_comes_back_the_same_bytes() {
    let _ = runtime();
    for dt in ALL_DATATYPES {
        let (data, bytes) = sample(dt);
        let value = data.into_ort_value(vec![1, 3]).unwrap();
        assert_eq!(ort_value_le_bytes(&value, dt).unwrap(), bytes, "{dt}");
        // Asking for the wrong type is an error, not a reinterpretation.
        let other = if dt == Datatype::Fp64 {
            Datatype::Fp32
        } else {
            Datatype::Fp64
        };
        assert!(ort_value_le_bytes(&value, other).is_err(), "{dt}");
    }
}
