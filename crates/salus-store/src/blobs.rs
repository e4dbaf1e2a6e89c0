//! The blob store: attachment contents, content-addressed by SHA-256 on the local file
//! system (`<root>/ab/cd/<hash>`). Uploads stream to a temporary file while they are hashed
//! and measured, are synced, then renamed into place (a blob is whole or absent). Every
//! read re-hashes the file before it is handed out.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use salus_kernel::Hash32;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the content is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the content is empty")]
    Empty,
    #[error("blob {0} is missing")]
    Missing(Hash32),
    #[error("blob {0} does not match its hash")]
    Corrupt(Hash32),
    #[error("blob storage failed: {0}")]
    Io(String),
    #[error("the upload was interrupted: {0}")]
    Upload(String),
}

fn io(e: std::io::Error) -> BlobError {
    BlobError::Io(e.to_string())
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBlob {
    pub sha256: Hash32,
    pub size: u64,
    /// The media type its first bytes show, when recognised.
    pub sniffed: Option<&'static str>,
}

pub struct BlobStore {
    root: PathBuf,
    max_bytes: u64,
}

impl BlobStore {
    pub fn new(root: &Path, max_bytes: u64) -> Self {
        Self {
            root: root.to_path_buf(),
            max_bytes,
        }
    }

    fn path_of(&self, h: &Hash32) -> PathBuf {
        let hex = h.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// Stream `body` into the store.
    pub async fn put<S, E>(&self, mut body: S) -> Result<StoredBlob, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp_dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(io)?;
        let tmp = tmp_dir.join(uuid::Uuid::now_v7().simple().to_string());
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut head: Vec<u8> = Vec::with_capacity(8192);
        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Upload(e.to_string()))?;
                size += chunk.len() as u64;
                if size > self.max_bytes {
                    return Err(BlobError::TooLarge(self.max_bytes));
                }
                if head.len() < 8192 {
                    let take = (8192 - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io)?;
            }
            if size == 0 {
                return Err(BlobError::Empty);
            }
            file.sync_all().await.map_err(io)?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let sha256 = Hash32(hasher.finalize().into());
        let dest = self.path_of(&sha256);
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        tokio::fs::rename(&tmp, &dest).await.map_err(io)?;
        let sniffed = infer::get(&head).map(|t| t.mime_type()).or_else(|| {
            std::str::from_utf8(&head)
                .ok()
                .filter(|t| !t.contains('\0'))
                .map(|_| "text/plain")
        });
        Ok(StoredBlob {
            sha256,
            size,
            sniffed,
        })
    }

    /// Re-hash the blob and, when it matches, open it for reading from the start.
    pub async fn open_verified(&self, h: &Hash32) -> Result<(tokio::fs::File, u64), BlobError> {
        let path = self.path_of(h);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::Missing(*h));
            }
            Err(e) => return Err(io(e)),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        if Hash32(hasher.finalize().into()) != *h {
            return Err(BlobError::Corrupt(*h));
        }
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        Ok((file, size))
    }

    /// Where a blob lives (for operators and tests).
    pub fn locate(&self, h: &Hash32) -> PathBuf {
        self.path_of(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn stored_blobs_are_whole_hashed_sniffed_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path(), 1024);
        let pdf = store
            .put(chunks(&[b"%PDF-1.7\n", b"rest of a document"]))
            .await
            .unwrap();
        assert_eq!(pdf.sniffed, Some("application/pdf"));
        assert_eq!(pdf.size, 27);
        assert_eq!(pdf.sha256, Hash32::sha256(b"%PDF-1.7\nrest of a document"));
        assert!(store.open_verified(&pdf.sha256).await.is_ok());
        assert!(matches!(
            store.put(chunks(&[&[0u8; 800], &[0u8; 800]])).await,
            Err(BlobError::TooLarge(1024))
        ));
        assert!(matches!(
            store.put(chunks(&[])).await,
            Err(BlobError::Empty)
        ));
        std::fs::write(store.locate(&pdf.sha256), b"%PDF-1.7\naltered").unwrap();
        assert!(matches!(
            store.open_verified(&pdf.sha256).await,
            Err(BlobError::Corrupt(_))
        ));
        let txt = store.put(chunks(&[b"plain words"])).await.unwrap();
        assert_eq!(txt.sniffed, Some("text/plain"));
        // Nothing is left half-written in the temporary folder.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
