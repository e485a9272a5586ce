//! Reads model files' headers without loading their weights: which model
//! a file is (architecture, name, size, quantization, parameters), a
//! structure fingerprint that survives renaming, re-saving and
//! re-quantizing, and for pickles (PyTorch checkpoints), every import the
//! pickle would make on load and how dangerous it is. Nothing is ever
//! unpickled or executed.
//!
//! The only I/O is through the `Read + Seek` it is given, under a
//! [`Budget`] of bytes, time, table sizes and nesting: a hostile file gets
//! an error, never a panic or an unbounded allocation.
//!
//! Architecture invariant: no parser allocates from a length the file
//! claims before checking it against what the file holds and the budget.

#![forbid(unsafe_code)]

#[cfg(test)]
mod adversarial_tests;
mod budget;
mod error;
mod fingerprint;
#[cfg(test)]
mod fuzz_tests;
mod gguf;
mod import_class;
mod onnx;
mod pickle;
mod report;
mod safetensors;
mod size_label;
mod tflite;
mod torch_zip;

use std::io::{Read, Seek};

pub use budget::{Bounded, Budget};
pub use error::{Failed, InspectError};
pub use fingerprint::structure_fingerprint;
pub use import_class::classify_import;
pub use report::{
    Format, ImportClass, ModelReport, OnnxDetails, PickleImport, PickleScan, Risk, Tensor,
    TfliteDetails,
};

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 16;

/// The format a file's first bytes say it is in. `name` (the file name,
/// where known) settles the cases content alone cannot: a protocol 0 or 1
/// pickle, which starts with an ordinary opcode.
pub fn sniff(head: &[u8], name: Option<&str>) -> Option<Format> {
    if head.starts_with(b"GGUF") {
        return Some(Format::Gguf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Some(Format::PytorchZip);
    }
    if head.len() >= 8 && &head[4..8] == b"TFL3" {
        return Some(Format::Tflite);
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Some(Format::Pickle);
    }
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().ok()?);
        if n > 1 {
            return Some(Format::Safetensors);
        }
    }
    // Extensions in any case, as the loaders take them.
    let ext = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    let ext = ext.as_deref();
    if head.first() == Some(&0x08) && ext != Some("pkl") {
        return Some(Format::Onnx);
    }
    // Protocol 0/1 pickles: a text or binary opcode first, by name only.
    if matches!(
        ext,
        Some("pkl" | "pickle" | "pt" | "pth" | "ckpt" | "bin" | "joblib")
    ) && head
        .first()
        .is_some_and(|b| b"c(}]KJMNSVXUqhI.\x80".contains(b))
    {
        return Some(Format::Pickle);
    }
    None
}

/// Inspects the file `reader` holds (from its start), as the format its
/// leading bytes (and `name`) say. A file read as another format, or as
/// none, is also walked as a pickle when its first byte is a pickle
/// opcode: `pickle.load` and `torch.load` read any file as one, so a
/// pickle behind a GGUF or safetensors header, or named `model.gguf`,
/// still counts when it runs code.
pub fn inspect<R: Read + Seek>(
    reader: R,
    budget: Budget,
    name: Option<&str>,
) -> Result<ModelReport, Failed> {
    let fail = |format, error| Failed { format, error };
    let mut r = Bounded::new(reader, budget).map_err(|e| fail(None, e))?;
    let mut head = vec![0; SNIFF_BYTES.min(r.len() as usize)];
    r.read_exact_or(&mut head, "leading bytes")
        .map_err(|e| fail(None, e))?;
    let format = sniff(&head, name);
    let main = match format {
        Some(f) => r
            .seek_to(0)
            .and_then(|()| inspect_as(&mut r, f))
            .map_err(|e| fail(Some(f), e)),
        None => Err(fail(
            None,
            InspectError::UnknownFormat(format!(
                "leading bytes {}",
                head.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )),
        )),
    };
    let read_as_pickle = !matches!(format, Some(Format::Pickle | Format::PytorchZip))
        && head.first().is_some_and(|b| pickle::is_opcode(*b));
    if !read_as_pickle {
        return main;
    }
    let alt =
        Bounded::new(r.into_inner(), budget).and_then(|mut p| inspect_as(&mut p, Format::Pickle));
    match (main, alt) {
        // A file that is another format and also a pickle whose walk ran
        // out of budget before it imported anything dangerous: suspicious
        // (said, and a policy input), not dangerous, or every large
        // safetensors file whose header length starts with an opcode byte
        // could be. A file that is no other format stays dangerous.
        (Ok(mut report), Ok(alt))
            if alt.risk == Risk::Dangerous
                && alt
                    .pickle
                    .as_ref()
                    .is_none_or(|p| p.dangerous().next().is_none()) =>
        {
            report.risk = report.risk.max(Risk::Suspicious);
            report.risk_reasons.push(format!(
                "the file may also be a pickle, not scanned to its end: {}",
                alt.risk_reasons.join("; ")
            ));
            Ok(report)
        }
        (Ok(mut report), Ok(alt)) if alt.risk == Risk::Dangerous => {
            report.risk = Risk::Dangerous;
            report.risk_reasons.push(format!(
                "the file is also a pickle, which pickle.load or torch.load would run: {}",
                alt.risk_reasons.join("; ")
            ));
            report.bytes_read = report.bytes_read.saturating_add(alt.bytes_read);
            report.pickle = alt.pickle;
            Ok(report)
        }
        (Err(failed), Ok(mut alt)) if alt.risk == Risk::Dangerous => {
            let as_what = failed.format.map_or("a model file", Format::as_str);
            alt.risk_reasons
                .insert(0, format!("read as {as_what} it fails ({})", failed.error));
            Ok(alt)
        }
        (main, _) => main,
    }
}

/// Inspects `r` as `format`.
pub fn inspect_as<R: Read + Seek>(
    r: &mut Bounded<R>,
    format: Format,
) -> Result<ModelReport, InspectError> {
    let mut report = ModelReport::new(format);
    match format {
        Format::Gguf => gguf::read(r, &mut report)?,
        Format::Safetensors => safetensors::read(r, &mut report)?,
        Format::Onnx => onnx::read(r, &mut report)?,
        Format::Tflite => tflite::read(r, &mut report)?,
        Format::PytorchZip => match torch_zip::read(r, &mut report) {
            // The archive's directory is over budget: its pickles are
            // unscanned (torch has no such limit).
            Err(e) if e.is_budget() => {
                report.pickle = Some(PickleScan {
                    unscanned: Some(e.to_string()),
                    ..PickleScan::default()
                });
            }
            other => other?,
        },
        Format::Pickle => pickle::read_file(r, &mut report)?,
    }
    finish(&mut report);
    report.bytes_read = r.bytes_read();
    Ok(report)
}

/// What every format shares: counts from the tensor list, the size label
/// where the file gives none, the fingerprint, the risk.
fn finish(report: &mut ModelReport) {
    if !report.tensors.is_empty() {
        if report.tensor_count == 0 {
            report.tensor_count = report.tensors.len() as u64;
        }
        if report.parameters == 0 {
            report.parameters = report
                .tensors
                .iter()
                .map(Tensor::elements)
                .fold(0u64, u64::saturating_add);
        }
        for t in &report.tensors {
            if !t.dtype.is_empty() && !report.dtypes.contains(&t.dtype) {
                report.dtypes.insert(t.dtype.clone());
            }
        }
        report.structure_fingerprint = structure_fingerprint(&report.architecture, &report.tensors);
    }
    if report.size_label.is_empty() && report.parameters > 0 {
        report.size_label = size_label::from_parameters(report.parameters);
    }
    if report.quantization.is_empty() {
        report.quantization = dominant_dtype(&report.tensors);
    }
    if let Some(scan) = &report.pickle {
        let dangerous: Vec<_> = scan.dangerous().collect();
        let unknown: Vec<_> = scan.unknown().collect();
        if let Some(why) = &scan.unscanned {
            report.risk = Risk::Dangerous;
            report.risk_reasons.push(format!(
                "a pickle the loader runs was not scanned to its end ({why}): \
                 what it imports past that point could run code"
            ));
        }
        if !dangerous.is_empty() {
            report.risk = Risk::Dangerous;
            for i in dangerous {
                report.risk_reasons.push(format!(
                    "imports {}.{} ({}){}",
                    i.module,
                    i.name,
                    i.at,
                    if i.called { ", called" } else { "" }
                ));
            }
        } else if !unknown.is_empty() && report.risk == Risk::Safe {
            report.risk = Risk::Suspicious;
        }
        for i in unknown {
            report.risk_reasons.push(format!(
                "imports {}.{}, not a known PyTorch or NumPy global ({})",
                i.module, i.name, i.at
            ));
        }
    }
}

/// The dtype holding the most parameters ("" without tensors).
fn dominant_dtype(tensors: &[Tensor]) -> String {
    let mut by: std::collections::BTreeMap<&str, u64> = Default::default();
    for t in tensors {
        let n = by.entry(&t.dtype).or_default();
        *n = n.saturating_add(t.elements().max(1));
    }
    by.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}
