//! The codec of the KServe v2 services: prost's, except that a request
//! that does not decode is the caller's error, `INVALID_ARGUMENT` naming
//! the message and the field, where `tonic-prost` answers `INTERNAL`
//! (which tells a client the server failed). Encoding is prost's own.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

/// `tonic_prost::ProstCodec` with malformed input as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct KserveCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for KserveCodec<T, U> {
    fn default() -> Self {
        KserveCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for KserveCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = KserveDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        KserveDecoder { _pd: PhantomData }
    }
}

/// Decodes `U` with prost; a decode error is `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct KserveDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for KserveDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
}
