//! Pins the ractor 0.16 behaviour the design reasons about (the tree does not rely on it: it
//! drains and stops connections explicitly before stopping their supervisor).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};

struct ChildState {
    dropped: Arc<AtomicBool>,
}

impl Drop for ChildState {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

struct ChildArgs {
    dropped: Arc<AtomicBool>,
    post_stop_ran: Arc<AtomicBool>,
}

struct ChildActor {
    post_stop_ran: std::sync::Mutex<Option<Arc<AtomicBool>>>,
}

impl Actor for ChildActor {
    type Msg = ();
    type State = ChildState;
    type Arguments = ChildArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: ChildArgs,
    ) -> Result<ChildState, ActorProcessingErr> {
        *self.post_stop_ran.lock().unwrap() = Some(args.post_stop_ran);
        Ok(ChildState {
            dropped: args.dropped,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        _state: &mut ChildState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(flag) = &*self.post_stop_ran.lock().unwrap() {
            flag.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = ActorRef<()>;
    type Arguments = ChildArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: ChildArgs,
    ) -> Result<ActorRef<()>, ActorProcessingErr> {
        let child = ChildActor {
            post_stop_ran: std::sync::Mutex::new(None),
        };
        let (child, _) = Actor::spawn_linked(None, child, args, myself.get_cell()).await?;
        Ok(child)
    }
}

/// In ractor 0.16 a supervisor that stops kills its still-linked children: their state is
/// dropped, but `post_stop` does not run (so must-run cleanup belongs in `Drop`).
#[tokio::test]
async fn stopping_a_supervisor_kills_linked_children_without_post_stop() {
    let dropped = Arc::new(AtomicBool::new(false));
    let post_stop_ran = Arc::new(AtomicBool::new(false));
    let (parent, parent_task) = Actor::spawn(
        None,
        Parent,
        ChildArgs {
            dropped: Arc::clone(&dropped),
            post_stop_ran: Arc::clone(&post_stop_ran),
        },
    )
    .await
    .unwrap();
    let child = parent
        .get_children()
        .into_iter()
        .next()
        .expect("the child is linked");
    parent.stop_and_wait(None, None).await.unwrap();
    parent_task.await.unwrap();
    child
        .wait(Some(Duration::from_secs(5)))
        .await
        .expect("child ended with its parent");
    assert_eq!(child.get_status(), ActorStatus::Stopped);
    assert!(dropped.load(Ordering::SeqCst), "child state not dropped");
    assert!(
        !post_stop_ran.load(Ordering::SeqCst),
        "ractor ran post_stop on a killed child"
    );
}
