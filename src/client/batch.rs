//! Sending a batch (`[FHS] BHS {MSH ...} BTS [FTS]`) as one frame and reading its batch
//! acknowledgment.

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Acknowledgment, Client, ClientError, Expect, inspect};
use crate::ack::AckCode;
use crate::frame::{END_BLOCK, FrameError, START_BLOCK};
use crate::hl7::{Batch, ParseOptions, is_batch};

/// One message of a sent batch and what became of it, in batch order.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchItem {
    /// The message's MSH-10, as sent.
    pub control_id: String,
    /// Its acknowledgment, as [`Client::send`] reports one: `Ok(Some)` for AA/CA,
    /// [`ClientError::Negative`] for AE/AR/CE/CR, `Ok(None)` when its MSH-15 asked for no ACK
    /// and none came, [`ClientError::Unanswered`] when one was due and the reply has none.
    pub result: Result<Option<Acknowledgment>, ClientError>,
}

/// What the receiver answered to a whole batch, before it is matched to the messages.
enum BatchReply {
    /// A batch of ACKs.
    Batch(Vec<Acknowledgment>),
    /// One ACK for the whole batch (a receiver that refused the envelope, or reads no batches).
    Whole(Acknowledgment),
}

impl Client {
    /// Checks a batch as [`send_batch`](Self::send_batch) does before writing it, and returns
    /// the MSH-10 of each of its messages, in order.
    ///
    /// # Errors
    /// [`ClientError::InvalidBatch`] for a malformed envelope, and the errors of
    /// [`Client::check`] for a message in it.
    pub fn check_batch(batch: &Bytes) -> Result<Vec<String>, ClientError> {
        inspect_batch(batch).map(|(messages, _)| messages.into_iter().map(|(id, _)| id).collect())
    }

    /// Sends a batch (`[FHS] BHS {MSH ...} BTS [FTS]`, segments ending in CR, LF or CRLF) as one
    /// frame and waits for the reply, retrying the whole batch per the config after a
    /// transient failure. The reply is read as a batch acknowledgment (each ACK matched to its
    /// message by MSA-2), or as one ACK that answers every message (what receivers send when
    /// they refuse the envelope or read no batches).
    ///
    /// Returns one [`BatchItem`] per message, in order.
    ///
    /// # Errors
    /// [`ClientError::InvalidBatch`] when the envelope is malformed, the errors of
    /// [`Client::check`] for a message in it, and the transport errors of [`Client::send`]
    /// (nothing is matched then: the receiver may have got the batch or not).
    pub async fn send_batch(
        &mut self,
        batch: impl Into<Bytes>,
    ) -> Result<Vec<BatchItem>, ClientError> {
        let batch = batch.into();
        let (expected, batch_ids) = inspect_batch(&batch)?;
        self.begin();
        let mut attempt = 0;
        let reply = loop {
            let result = self.batch_once(&batch).await;
            match &result {
                Err(e) if attempt < self.config.max_retries && self.retryable(e) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying batch");
                }
                _ => break result,
            }
        };
        self.busy = false;
        Ok(correlate(expected, &batch_ids, reply?))
    }

    async fn batch_once(&mut self, batch: &Bytes) -> Result<BatchReply, ClientError> {
        self.write(batch.clone()).await?;
        let timeout = self.config.reply_timeout;
        let Some(conn) = self.connection.as_mut() else {
            return Err(ClientError::Closed);
        };
        let payload = match tokio::time::timeout(timeout, conn.next()).await {
            Err(_elapsed) => Err(ClientError::Timeout(timeout)),
            Ok(None) => Err(ClientError::Closed),
            Ok(Some(Err(FrameError::Io(e)))) => Err(ClientError::Io(e)),
            Ok(Some(Err(e))) => Err(ClientError::Frame(e)),
            Ok(Some(Ok(payload))) => Ok(payload),
        };
        let reply = payload.and_then(parse_reply);
        match reply {
            Ok(reply) => {
                self.succeeded();
                Ok(reply)
            }
            Err(e) => {
                self.lose_connection();
                Err(e)
            }
        }
    }
}

/// The reply as a batch of ACKs, or one ACK.
fn parse_reply(payload: Bytes) -> Result<BatchReply, ClientError> {
    if !is_batch(&payload) {
        return Acknowledgment::parse(payload).map(BatchReply::Whole);
    }
    let lenient = ParseOptions::default().lenient_line_endings(true);
    let batch =
        Batch::parse(payload, &lenient).map_err(|e| ClientError::NotAnAck(e.to_string()))?;
    batch
        .messages()
        .map(|m| Acknowledgment::parse(m.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map(BatchReply::Batch)
}

/// Each message's MSH-10 and what reply it asks for, then the batch's own control ids.
type Inspected = (Vec<(String, Expect)>, Vec<Bytes>);

/// Each message's MSH-10 and what reply it asks for, and the batch's own control ids (FHS-11,
/// BHS-11s); the envelope checked.
fn inspect_batch(batch: &Bytes) -> Result<Inspected, ClientError> {
    if let Some(offset) = memchr::memchr2(START_BLOCK, END_BLOCK, batch) {
        return Err(ClientError::Unframeable(FrameError::ReservedByte {
            byte: batch[offset],
            offset,
        }));
    }
    let lenient = ParseOptions::default().lenient_line_endings(true);
    let parsed = Batch::parse(batch.clone(), &lenient).map_err(ClientError::InvalidBatch)?;
    let messages = parsed.messages().map(inspect).collect::<Result<_, _>>()?;
    let ids = std::iter::once(parsed.file_control_id())
        .chain(parsed.groups().iter().map(|g| g.control_id()))
        .filter(|id| !id.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();
    Ok((messages, ids))
}

/// Matches the reply to the messages: by MSA-2; a negative ACK with an empty MSA-2 answers the
/// first message still unanswered. One ACK alone answers them all when its MSA-2 is empty or a
/// batch control id (a refused envelope); with a message's MSH-10 it answers that message only
/// (a receiver that read the batch as one message), the others are
/// [`ClientError::Unanswered`]; with another id, every message is a
/// [`ClientError::Mismatch`].
fn correlate(
    expected: Vec<(String, Expect)>,
    batch_ids: &[Bytes],
    reply: BatchReply,
) -> Vec<BatchItem> {
    let outcome = |ack: &Acknowledgment| -> Result<Option<Acknowledgment>, ClientError> {
        if ack.code().is_success() {
            Ok(Some(ack.clone()))
        } else {
            Err(ClientError::Negative {
                code: ack.code(),
                text: ack.text(),
                ack: Box::new(ack.clone()),
            })
        }
    };
    match reply {
        BatchReply::Whole(ack) => {
            let received = ack.acknowledged_control_id_bytes();
            let whole = received.is_empty() || batch_ids.iter().any(|id| id == received);
            let one = expected.iter().any(|(id, _)| id.as_bytes() == received);
            expected
                .into_iter()
                .map(|(control_id, _)| {
                    let result = if whole || control_id.as_bytes() == received {
                        outcome(&ack)
                    } else if one {
                        Err(ClientError::Unanswered)
                    } else {
                        Err(ClientError::Mismatch {
                            expected: control_id.clone(),
                            received: String::from_utf8_lossy(received).into_owned(),
                        })
                    };
                    BatchItem { control_id, result }
                })
                .collect()
        }
        BatchReply::Batch(acks) => {
            let mut unused: Vec<Option<Acknowledgment>> = acks.into_iter().map(Some).collect();
            let mut answers: Vec<Option<Acknowledgment>> = expected
                .iter()
                .map(|(id, _)| {
                    let at = unused.iter().position(|a| {
                        a.as_ref()
                            .is_some_and(|a| a.acknowledged_control_id_bytes() == id.as_bytes())
                    })?;
                    unused[at].take()
                })
                .collect();
            let mut anonymous = unused.into_iter().flatten().filter(|a| {
                a.acknowledged_control_id_bytes().is_empty() && a.code() != AckCode::AA
            });
            for answer in answers.iter_mut().filter(|a| a.is_none()) {
                *answer = anonymous.next();
            }
            expected
                .into_iter()
                .zip(answers)
                .map(|((control_id, expect), ack)| {
                    let result = match (ack, expect) {
                        (Some(ack), _) => outcome(&ack),
                        (None, Expect::Never | Expect::OnErrorOnly) => Ok(None),
                        (None, Expect::Always) => Err(ClientError::Unanswered),
                    };
                    BatchItem { control_id, result }
                })
                .collect()
        }
    }
}
