//! The life of one message's handler: a tokio task with a deadline.
//!
//! The handler future runs in its own task, so a panic is caught by tokio (the
//! [`JoinError`](tokio::task::JoinError) carries the payload) and a stuck handler can be aborted
//! without touching the connection. At the deadline the task is aborted and the result is only
//! reported once the task has really ended (its future, and whatever it owned, dropped), so a
//! failure response is never sent while the handler may still be running.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::task::TaskTracker;

use crate::protocol::Failure;
use crate::shared::deadline;

/// A running handler. Dropping it aborts the task.
pub(crate) struct HandlerTask<R> {
    task: JoinHandle<Option<R>>,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    timed_out: bool,
}

impl<R: Send + 'static> HandlerTask<R> {
    /// Spawns `handler` (already instrumented with its span) on the server's tracker.
    pub(crate) fn spawn<F>(tasks: &TaskTracker, handler: F, limit: Duration) -> Self
    where
        F: Future<Output = Option<R>> + Send + 'static,
    {
        let task = tasks.spawn(handler);
        Self {
            task,
            deadline: Box::pin(tokio::time::sleep_until(deadline(Instant::now(), limit))),
            limit,
            timed_out: false,
        }
    }
}

impl<R> Future for HandlerTask<R> {
    /// The handler's answer, or why there is none.
    type Output = Result<Option<R>, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(joined) = Pin::new(&mut this.task).poll(cx) {
                return Poll::Ready(match joined {
                    // Past the deadline the result is a timeout, even if the task managed to
                    // finish between the abort and this poll: the deadline was already reported.
                    _ if this.timed_out => Err(Failure::TimedOut(this.limit)),
                    Ok(response) => Ok(response),
                    Err(error) if error.is_panic() => {
                        Err(Failure::Panicked(panic_message(error.into_panic())))
                    }
                    // Cancelled by someone else: only the runtime shutting down does that.
                    Err(_) => Err(Failure::Aborted),
                });
            }
            if this.timed_out {
                // Aborted; the join handle wakes us once the task has really ended.
                return Poll::Pending;
            }
            ready!(this.deadline.as_mut().poll(cx));
            this.task.abort();
            this.timed_out = true;
        }
    }
}

impl<R> Drop for HandlerTask<R> {
    fn drop(&mut self) {
        // Dropping a JoinHandle only detaches the task; a connection that goes away takes its
        // handlers with it.
        self.task.abort();
    }
}

/// The text of a panic payload: `panic!("...")` gives a `&str` or a `String`.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic payload is not a string".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A handler that finishes in time yields its response.
    #[tokio::test(start_paused = true)]
    async fn finished_handler_yields_response() {
        let tasks = TaskTracker::new();
        let task = HandlerTask::spawn(&tasks, async { Some(7) }, Duration::from_secs(1));
        assert_eq!(task.await, Ok(Some(7)));
    }

    /// A handler past its deadline is a timeout, and its future is dropped before that is
    /// reported.
    #[tokio::test(start_paused = true)]
    async fn stuck_handler_times_out_and_is_dropped_first() {
        let tasks = TaskTracker::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(Arc::clone(&dropped));
        let task = HandlerTask::spawn(
            &tasks,
            async move {
                let _guard = guard;
                std::future::pending::<Option<u8>>().await
            },
            Duration::from_secs(1),
        );
        assert_eq!(task.await, Err(Failure::TimedOut(Duration::from_secs(1))));
        assert!(dropped.load(Ordering::SeqCst));
    }

    /// A panicking handler is a failure carrying the panic's text.
    #[tokio::test]
    async fn panicking_handler_reports_message() {
        let tasks = TaskTracker::new();
        let task = HandlerTask::<u8>::spawn(
            &tasks,
            async { panic!("boom {}", 1) },
            Duration::from_secs(1),
        );
        assert_eq!(task.await, Err(Failure::Panicked("boom 1".into())));
        let task = HandlerTask::<u8>::spawn(&tasks, async { panic!("static") }, Duration::MAX);
        assert_eq!(task.await, Err(Failure::Panicked("static".into())));
    }

    /// Dropping a running handler aborts its task.
    #[tokio::test]
    async fn dropping_handler_aborts_task() {
        let tasks = TaskTracker::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(Arc::clone(&dropped));
        let task = HandlerTask::spawn(
            &tasks,
            async move {
                let _guard = guard;
                std::future::pending::<Option<u8>>().await
            },
            Duration::from_secs(60),
        );
        drop(task);
        tasks.close();
        tasks.wait().await;
        assert!(dropped.load(Ordering::SeqCst));
    }
}
