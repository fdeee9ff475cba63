//! Reading back part of a stored object, for a player that asks by byte range (the console's
//! archive): the API reads it with the target's own credentials and hands the bytes on, so
//! the page reads only from its own origin.

use super::S3Target;
use crate::delivery::DeliveryError;

impl S3Target {
    /// The key of `url` (`s3://bucket/key`) when it names this target's bucket.
    pub fn key_of<'a>(&self, url: &'a str) -> Option<&'a str> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (bucket == self.bucket && !key.is_empty()).then_some(key)
    }

    /// The object's size.
    pub async fn size_of(&self, key: &str) -> Result<u64, DeliveryError> {
        let head = self
            .client()
            .await
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| DeliveryError::retryable(format!("reading s3 object: {e}")))?;
        Ok(head.content_length().unwrap_or(0).max(0) as u64)
    }

    /// Bytes `first..=last` of the object.
    pub async fn read_range(
        &self,
        key: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<u8>, DeliveryError> {
        let out = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={first}-{last}"))
            .send()
            .await
            .map_err(|e| DeliveryError::retryable(format!("reading s3 object: {e}")))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| DeliveryError::retryable(format!("reading s3 object: {e}")))?;
        Ok(bytes.into_bytes().to_vec())
    }
}
