use std::time::Duration;

use insights_queue::{JobState, NewJob};
use insights_testkit::wait_until;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_api_counts_lists_shows_retries_cancels_and_prunes() {
    let e = env("q_ops", test_config()).await;
    e.queue.push(Q, NewJob::new(TestJob::ok(1))).await.unwrap();
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(2, Behave::Permanent)).dedupe_key("two"),
        )
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    wait_until(secs(30), "one completed, one discarded", || async {
        let c = e.queue.counts(Q).await.unwrap();
        c.completed == 1 && c.discarded == 1
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
    // Two more that stay queued: one available, one scheduled.
    e.queue.push(Q, NewJob::new(TestJob::ok(3))).await.unwrap();
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::ok(4)).run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
        )
        .await
        .unwrap();

    let c = e.queue.counts(Q).await.unwrap();
    assert_eq!(
        (
            c.available,
            c.scheduled,
            c.completed,
            c.discarded,
            c.total()
        ),
        (1, 1, 1, 1, 4)
    );
    assert_eq!(e.queue.counts("nope").await.unwrap().total(), 0);

    let all = e.queue.list(Q, None, 10, 0).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let page2 = e.queue.list(Q, None, 3, 3).await.unwrap();
    assert_eq!(page2.len(), 1);
    let discarded = e
        .queue
        .list(Q, Some(JobState::Discarded), 10, 0)
        .await
        .unwrap();
    assert_eq!(discarded.len(), 1);
    let d = &discarded[0];
    assert!(d.last_error.as_deref().unwrap_or("").contains("bad input"));

    let detail = e.queue.show(d.id).await.unwrap().unwrap();
    assert_eq!(detail.payload["n"], 2);
    assert_eq!(detail.errors.len(), 1);
    assert_eq!(detail.state, JobState::Discarded);
    assert!(e.queue.show(-1).await.unwrap().is_none());

    // Retry: discarded → available with a fresh budget; not twice.
    assert!(e.queue.retry(d.id).await.unwrap());
    let again = e.queue.show(d.id).await.unwrap().unwrap();
    assert_eq!((again.state, again.attempt), (JobState::Available, 0));
    assert!(
        !e.queue.retry(d.id).await.unwrap(),
        "only discarded/cancelled jobs"
    );

    // Cancel: available and scheduled yes; completed no.
    let avail: Vec<_> = e
        .queue
        .list(Q, Some(JobState::Available), 10, 0)
        .await
        .unwrap();
    for j in &avail {
        assert!(e.queue.cancel(j.id).await.unwrap());
    }
    let sched = e
        .queue
        .list(Q, Some(JobState::Scheduled), 10, 0)
        .await
        .unwrap();
    assert!(e.queue.cancel(sched[0].id).await.unwrap());
    let done = e
        .queue
        .list(Q, Some(JobState::Completed), 10, 0)
        .await
        .unwrap();
    assert!(!e.queue.cancel(done[0].id).await.unwrap());
    assert_eq!(e.queue.counts(Q).await.unwrap().cancelled, 3);

    // A retried job whose dedupe key is now held by a live job cannot be retried.
    e.queue
        .push(Q, NewJob::new(TestJob::ok(5)).dedupe_key("two"))
        .await
        .unwrap();
    let cancelled_two = e
        .queue
        .list(Q, Some(JobState::Cancelled), 10, 0)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.dedupe_key.as_deref() == Some("two"))
        .unwrap();
    assert!(
        !e.queue.retry(cancelled_two.id).await.unwrap(),
        "key held by a live job"
    );

    // Prune: completed older than 0 s go; discarded/cancelled kept for an hour.
    tokio::time::sleep(Duration::from_millis(20)).await; // finalized_at must be in the past
    let pruned = e
        .queue
        .prune(Duration::ZERO, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let c = e.queue.counts(Q).await.unwrap();
    assert_eq!((c.completed, c.cancelled), (0, 3));
    let pruned = e.queue.prune(Duration::ZERO, Duration::ZERO).await.unwrap();
    assert_eq!(pruned, 3);
}

/// The bounds apalis-board's `RegisterRoute` puts on a storage, checked at compile time.
fn assert_board_bounds<B, T, Compact>()
where
    B: apalis_core::backend::Metrics
        + apalis_core::backend::ListWorkers
        + apalis_core::backend::ListAllTasks
        + apalis_core::backend::ListQueues
        + apalis_core::backend::BackendConfig
        + apalis_core::backend::ListTasks
        + apalis_core::backend::FetchById
        + apalis_core::backend::TaskSink<T, B::Kind>
        + apalis_core::backend::WireFormatBackend<Compact = Compact>
        + apalis_core::backend::Backend<Task = apalis_core::task::Task<Compact>>
        + Send
        + Sync
        + 'static,
    <B as apalis_core::backend::Backend>::Error: std::error::Error,
    B::Codec: apalis_core::backend::codec::Codec<T, Compact = Compact>,
    <B::Codec as apalis_core::backend::codec::Codec<T>>::Error: std::error::Error,
    Compact: serde::Serialize + 'static,
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_view_lists_fetches_counts_and_pushes() {
    use apalis_core::backend::{
        FetchById, Filter, ListQueues, ListTasks, ListWorkers, Metrics, TaskSink,
    };
    use apalis_core::task::status::Status;
    use apalis_core::task::task_id::TaskId;

    assert_board_bounds::<insights_queue::QueueBoard<TestJob>, TestJob, serde_json::Value>();

    let e = env("q_board", test_config()).await;
    e.queue.push(Q, NewJob::new(TestJob::ok(1))).await.unwrap();
    e.queue
        .push(Q, NewJob::new(TestJob::with(2, Behave::Permanent)))
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("board-w", 2), st.clone());
    wait_until(secs(30), "both finished", || async {
        let c = e.queue.counts(Q).await.unwrap();
        c.completed == 1 && c.discarded == 1
    })
    .await
    .unwrap();

    let mut board = e.queue.board::<TestJob>(Q);
    let workers = board.list_workers().await.unwrap();
    assert_eq!(workers.len(), 1, "the running worker is listed");
    w.stop().await.unwrap();

    let all = board
        .list_tasks(&Filter {
            status: None,
            page: 1,
            page_size: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let killed = board
        .list_tasks(&Filter {
            status: Some(Status::Killed),
            page: 1,
            page_size: None,
        })
        .await
        .unwrap();
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0].args["n"], 2);
    assert_eq!(killed[0].status(), Status::Killed);

    let id = killed[0].task_id().cloned().unwrap();
    let fetched = board.fetch_by_id(&id).await.unwrap().unwrap();
    assert_eq!(fetched.args["n"], 2);
    assert!(
        board
            .fetch_by_id(&TaskId::from_int(999_999))
            .await
            .unwrap()
            .is_none()
    );

    let stats = board.fetch_by_queue().await.unwrap();
    let completed = stats
        .iter()
        .find(|s| s.title.starts_with("completed"))
        .unwrap();
    assert_eq!(completed.value, "1");
    let queues = board.list_queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].name, Q);
    assert_eq!(queues[0].activity.iter().sum::<usize>(), 1);

    TaskSink::<TestJob, _>::push(&mut board, TestJob::ok(3))
        .await
        .unwrap();
    assert_eq!(
        e.queue.counts(Q).await.unwrap().available,
        1,
        "pushed from the board"
    );
    let global = board.global().await.unwrap();
    let avail = global
        .iter()
        .find(|s| s.title.starts_with("available"))
        .unwrap();
    assert_eq!(avail.value, "1");
}
