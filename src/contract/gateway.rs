//! A gateway for a process that serves several agents: their proposals and
//! results are queued and sent to the database in batches (`propose_batch`,
//! `record_results`), one call and one commit for as many requests of one
//! kind as are waiting, up to a limit.
//!
//! Every check of the contract still runs in the database for each request,
//! the identity check included: the gateway's login must be mapped to each
//! agent it serves (`backstop grant --agent`, `agent_logins`), and a request
//! naming any other agent is refused as it would be alone. Each caller gets
//! exactly the answer (or the refusal) its own call would have had: a batch
//! that one request makes the database refuse is sent again without it, and
//! that request gets its own error.
//!
//! Why: an action costs the database two commits, two round trips and, in
//! PL/pgSQL, a fresh start of every statement and expression each call;
//! with sixteen agents on two cores the backends spend more time switching
//! and committing than deciding. A batch pays the commit and the round trip
//! once, and the database decides a common batch (three or more requests,
//! every one allowed, each of a different agent) in a few statements for
//! all of it, so the fuller a batch, the cheaper each of its actions.
//!
//! Lanes: each connection has its own queue, and each handle on the
//! gateway (the one `start` returns, then each clone) sends to one lane,
//! the lanes taken in turn. An agent task with its own handle keeps its
//! requests on one connection, so a lane's agents move together: a call's
//! answers come back at once and their next requests make the next call.
//! With one queue for every connection, whichever worker was free took the
//! first few of a group whose others were still on their way, and calls
//! split into fragments (measured, 16 agents on two connections: 5.1 to
//! 5.4 requests a call and 0.53 to 0.56 of the floor's actions/s with one
//! queue; 7.9 and 0.62 to 0.64 with a lane each).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};

use super::{ContractError, Decision, Outcome, Proposal, Recorded, Result};

enum Job {
    Propose(Box<Proposal>, oneshot::Sender<Result<Decision>>),
    Record(Box<Outcome>, oneshot::Sender<Result<Recorded>>),
}

/// A batching gateway: a handle on one of its lanes (a connection and its
/// queue). Cloning is cheap and gives a handle on the next lane, in turn:
/// give each agent task its own clone, so that the agents spread over the
/// connections and each agent's requests keep to one.
pub struct Gateway {
    lanes: Arc<[mpsc::Sender<Job>]>,
    lane: usize,
    next: Arc<AtomicUsize>,
    stats: Arc<Counts>,
}

impl Clone for Gateway {
    fn clone(&self) -> Gateway {
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        Gateway {
            lanes: self.lanes.clone(),
            lane,
            next: self.next.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// What the gateway has sent so far.
#[derive(Debug, Default)]
struct Counts {
    calls: AtomicU64,
    requests: AtomicU64,
}

/// Calls made to the database and requests they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    pub calls: u64,
    pub requests: u64,
}

/// Scheduler turns a worker gives waiting callers before it sends a batch.
const SETTLE_TURNS: usize = 4;

/// After this many refused requests in one batch, the rest go one by one:
/// a batch resent without each refused request costs a run of the others.
const MAX_RESENDS: usize = 3;

impl Gateway {
    /// Starts `connections` lanes on `pool`, each a worker with its own
    /// connection and queue, sending at most `max_batch` requests a call
    /// (1 to 500, as the contract takes). The handle returned is on the
    /// first lane. The workers stop when every handle is dropped.
    pub fn start(pool: PgPool, connections: usize, max_batch: usize) -> Gateway {
        let max_batch = max_batch.clamp(1, 500);
        let stats = Arc::new(Counts::default());
        let lanes: Arc<[mpsc::Sender<Job>]> = (0..connections.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(max_batch * 2);
                let q = Queue {
                    rx,
                    held: VecDeque::new(),
                };
                tokio::spawn(worker(pool.clone(), q, max_batch, stats.clone()));
                tx
            })
            .collect();
        Gateway {
            lanes,
            lane: 0,
            next: Arc::new(AtomicUsize::new(1)),
            stats,
        }
    }

    /// Calls made to the database so far, and the requests they carried.
    pub fn stats(&self) -> GatewayStats {
        GatewayStats {
            calls: self.stats.calls.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
        }
    }

    /// `propose`, batched with whatever other proposals are waiting.
    pub async fn propose(&self, p: Proposal) -> Result<Decision> {
        let (tx, rx) = oneshot::channel();
        self.lanes[self.lane]
            .send(Job::Propose(Box::new(p), tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// `record_result`, batched with whatever other results are waiting.
    pub async fn record_result(&self, o: Outcome) -> Result<Recorded> {
        let (tx, rx) = oneshot::channel();
        self.lanes[self.lane]
            .send(Job::Record(Box::new(o), tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

fn closed() -> ContractError {
    ContractError::Database(sqlx::Error::PoolClosed)
}

/// A lane's requests waiting: its callers' channel, and those its worker
/// left for the next call because they were of the other kind.
struct Queue {
    rx: mpsc::Receiver<Job>,
    held: VecDeque<Job>,
}

impl Job {
    fn proposes(&self) -> bool {
        matches!(self, Job::Propose(..))
    }
}

impl Queue {
    /// A batch begun with `first` (the oldest request waiting): the held
    /// requests of its kind, in order, up to `max_batch`; the others stay
    /// held, in order.
    fn begin(&mut self, first: Job, max_batch: usize) -> Vec<Job> {
        let proposes = first.proposes();
        let mut jobs = vec![first];
        for j in std::mem::take(&mut self.held) {
            self.place(j, proposes, &mut jobs, max_batch);
        }
        jobs
    }

    /// Moves what the channel holds now into `jobs` while it is of the kind
    /// `proposes` and there is room; the rest waits in `held`.
    fn take(&mut self, proposes: bool, jobs: &mut Vec<Job>, max_batch: usize) {
        while let Ok(j) = self.rx.try_recv() {
            self.place(j, proposes, jobs, max_batch);
        }
    }

    fn place(&mut self, j: Job, proposes: bool, jobs: &mut Vec<Job>, max_batch: usize) {
        if j.proposes() == proposes && jobs.len() < max_batch {
            jobs.push(j);
        } else {
            self.held.push_back(j);
        }
    }
}

async fn worker(pool: PgPool, mut q: Queue, max_batch: usize, stats: Arc<Counts>) {
    let mut conn: Option<PoolConnection<Postgres>> = None;
    loop {
        let jobs = {
            // The worker waits for the next request and takes what else is
            // queued of its kind, so its batch fills while its last call was
            // in flight. One kind a call: the database pays a batch's start
            // once per kind it carries, so five proposals in one call and
            // five results in the next cost less than two calls of both (the
            // oldest request sets the kind, so neither kind waits more than
            // a call).
            let first = match q.held.pop_front() {
                Some(j) => j,
                None => match q.rx.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            let proposes = first.proposes();
            let mut jobs = q.begin(first, max_batch);
            q.take(proposes, &mut jobs, max_batch);
            // The callers a call just answered send their next request at
            // once: a few turns of the scheduler let them into this batch.
            for _ in 0..SETTLE_TURNS {
                tokio::task::yield_now().await;
                q.take(proposes, &mut jobs, max_batch);
            }
            jobs
        };
        let mut proposals = Vec::new();
        let mut outcomes = Vec::new();
        for j in jobs {
            match j {
                Job::Propose(p, tx) => proposals.push((*p, tx)),
                Job::Record(o, tx) => outcomes.push((*o, tx)),
            }
        }
        stats
            .requests
            .fetch_add((proposals.len() + outcomes.len()) as u64, Ordering::Relaxed);
        // Each worker keeps its connection: a connection from the pool per
        // batch would cost a round trip of its own (the pool's test).
        if conn.is_none() {
            match pool.acquire().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    // Nothing was sent: the callers may try again.
                    let msg = format!("the gateway has no connection: {e}");
                    fail_with(proposals, outcomes, || {
                        ContractError::Database(sqlx::Error::Io(std::io::Error::other(msg.clone())))
                    });
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if !in_batches(c, proposals, outcomes, &stats).await {
            // No answer on it: closed, not given back to the pool.
            if let Some(c) = conn.take() {
                drop(c.detach());
            }
        }
    }
}

/// What to do after a batch failed.
enum Failed {
    /// The database refused proposal `i` (with this error, as the proposal
    /// alone would have had it); the batch was rolled back.
    Proposal(usize, ContractError),
    /// The same for outcome `i`.
    Outcome(usize, ContractError),
    /// The database refused the batch otherwise; nothing was written.
    Batch,
    /// No answer from the database: whether the call committed is unknown,
    /// so nothing is sent again (a resent proposal could be a second action).
    Unknown(String),
}

/// Which request a batch's refusal names: `propose_batch: request I: ...`
/// or `record_results: result I: ...`.
fn failed(e: ContractError, proposals: usize, outcomes: usize) -> Failed {
    match e {
        ContractError::Refused { code, message, hint } => {
            let named = |prefix: &str, n: usize| {
                let (i, m) = message.strip_prefix(prefix)?.split_once(": ")?;
                let i = i.parse::<usize>().ok().filter(|i| *i < n)?;
                Some((
                    i,
                    ContractError::Refused {
                        code: code.clone(),
                        message: m.to_string(),
                        hint: hint.clone(),
                    },
                ))
            };
            if let Some((i, e)) = named("propose_batch: request ", proposals) {
                Failed::Proposal(i, e)
            } else if let Some((i, e)) = named("record_results: result ", outcomes) {
                Failed::Outcome(i, e)
            } else {
                Failed::Batch
            }
        }
        ContractError::Database(sqlx::Error::Database(_)) => Failed::Batch,
        other => Failed::Unknown(other.to_string()),
    }
}

fn unknown(msg: &str) -> ContractError {
    ContractError::Database(sqlx::Error::Io(std::io::Error::other(format!(
        "the gateway's batch got no answer (whether it committed is unknown): {msg}"
    ))))
}

type Proposals = Vec<(Proposal, oneshot::Sender<Result<Decision>>)>;
type Outcomes = Vec<(Outcome, oneshot::Sender<Result<Recorded>>)>;

fn fail_all(proposals: Proposals, outcomes: Outcomes, msg: &str) {
    fail_with(proposals, outcomes, || unknown(msg));
}

fn fail_with(proposals: Proposals, outcomes: Outcomes, e: impl Fn() -> ContractError) {
    for (_, tx) in proposals {
        let _ = tx.send(Err(e()));
    }
    for (_, tx) in outcomes {
        let _ = tx.send(Err(e()));
    }
}

/// One call and one transaction for the proposals and outcomes waiting;
/// sent again without each request the database refuses (which gets its own
/// error), up to MAX_RESENDS times, then one by one. False when the
/// connection gave no answer (it is not to be used again).
async fn in_batches(c: &mut PgConnection, mut proposals: Proposals, mut outcomes: Outcomes, stats: &Counts) -> bool {
    // One request alone goes as the single call: a batch of one would only
    // add the batch's own work.
    let alone = proposals.len() + outcomes.len() == 1;
    for _ in 0..=MAX_RESENDS {
        if alone {
            break;
        }
        if proposals.is_empty() && outcomes.is_empty() {
            return true;
        }
        let ps: Vec<&Proposal> = proposals.iter().map(|(p, _)| p).collect();
        let os: Vec<&Outcome> = outcomes.iter().map(|(o, _)| o).collect();
        stats.calls.fetch_add(1, Ordering::Relaxed);
        match super::batch(&mut *c, &ps, &os).await {
            Ok((ds, rs)) if ds.len() == proposals.len() && rs.len() == outcomes.len() => {
                for ((_, tx), d) in proposals.into_iter().zip(ds) {
                    let _ = tx.send(Ok(d));
                }
                for ((_, tx), r) in outcomes.into_iter().zip(rs) {
                    let _ = tx.send(Ok(r));
                }
                return true;
            }
            Ok((ds, rs)) => {
                // Cannot happen (a row a request); committed, so not resent.
                let msg = format!(
                    "{} decisions and {} results for {} proposals and {} outcomes",
                    ds.len(),
                    rs.len(),
                    proposals.len(),
                    outcomes.len()
                );
                fail_all(proposals, outcomes, &msg);
                return true;
            }
            Err(e) => match failed(e, proposals.len(), outcomes.len()) {
                Failed::Proposal(i, e) => {
                    let _ = proposals.remove(i).1.send(Err(e));
                }
                Failed::Outcome(i, e) => {
                    let _ = outcomes.remove(i).1.send(Err(e));
                }
                Failed::Batch => break,
                Failed::Unknown(msg) => {
                    fail_all(proposals, outcomes, &msg);
                    return false;
                }
            },
        }
    }
    let mut proposals = proposals.into_iter();
    while let Some((p, tx)) = proposals.next() {
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let r = super::propose(&mut *c, &p).await;
        let broken = lost(&r);
        let _ = tx.send(r);
        if broken {
            fail_with(proposals.collect(), outcomes, not_sent);
            return false;
        }
    }
    let mut outcomes = outcomes.into_iter();
    while let Some((o, tx)) = outcomes.next() {
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let r = super::record_result(&mut *c, o.action_id, o.ok, o.result.as_ref(), o.inverse_params.as_ref()).await;
        let broken = lost(&r);
        let _ = tx.send(r);
        if broken {
            fail_with(Vec::new(), outcomes.collect(), not_sent);
            return false;
        }
    }
    true
}

fn not_sent() -> ContractError {
    ContractError::Database(sqlx::Error::Io(std::io::Error::other(
        "the gateway lost its connection before sending this (nothing of it was written)",
    )))
}

/// Whether a call got no answer from the database (the connection, not a refusal).
fn lost<T>(r: &Result<T>) -> bool {
    matches!(r, Err(ContractError::Database(e)) if e.as_database_error().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(tag: &str) -> Job {
        let p = Proposal {
            agent: tag.into(),
            ..Default::default()
        };
        Job::Propose(Box::new(p), oneshot::channel().0)
    }

    fn outcome(tag: u128) -> Job {
        let o = Outcome {
            action_id: uuid::Uuid::from_u128(tag),
            ok: true,
            result: None,
            inverse_params: None,
        };
        Job::Record(Box::new(o), oneshot::channel().0)
    }

    fn tags(jobs: &[Job]) -> Vec<String> {
        jobs.iter()
            .map(|j| match j {
                Job::Propose(p, _) => p.agent.clone(),
                Job::Record(o, _) => o.action_id.as_u128().to_string(),
            })
            .collect()
    }

    /// Clones take the lanes in turn, the first handle holding the first
    /// lane, so agent tasks with a clone each spread over the connections.
    #[tokio::test]
    async fn clones_take_the_lanes_in_turn() {
        // Lazy: no connection is made until a request is sent, and none is.
        let pool = match sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none") {
            Ok(p) => p,
            Err(e) => panic!("a lazy pool: {e}"),
        };
        let first = Gateway::start(pool.clone(), 3, 8);
        let clones: Vec<Gateway> = (0..5).map(|_| first.clone()).collect();
        let lanes: Vec<usize> = std::iter::once(&first).chain(&clones).map(|g| g.lane).collect();
        assert_eq!(lanes, [0, 1, 2, 0, 1, 2]);
        assert_eq!(first.lanes.len(), 3);
        let one = Gateway::start(pool, 0, 8);
        assert_eq!((one.lanes.len(), one.clone().lane), (1, 0));
    }

    /// A call carries one kind: the oldest request's. The other kind waits,
    /// in order, for the next call; nothing is lost or reordered within a
    /// kind, and the batch stops at its limit.
    #[tokio::test]
    async fn a_batch_takes_the_oldest_requests_kind_and_holds_the_rest_in_order() {
        let (tx, rx) = mpsc::channel(16);
        let mut q = Queue {
            rx,
            held: VecDeque::from([outcome(1), proposal("p1"), outcome(2)]),
        };
        for j in [proposal("p2"), outcome(3), outcome(4), proposal("p3")] {
            assert!(tx.try_send(j).is_ok());
        }
        let Some(first) = q.held.pop_front() else {
            panic!("a held request")
        };
        let mut jobs = q.begin(first, 3);
        q.take(false, &mut jobs, 3);
        assert_eq!(tags(&jobs), ["1", "2", "3"]);
        assert_eq!(tags(q.held.make_contiguous()), ["p1", "p2", "4", "p3"]);

        let Some(first) = q.held.pop_front() else {
            panic!("a held request")
        };
        let mut jobs = q.begin(first, 64);
        q.take(true, &mut jobs, 64);
        assert_eq!(tags(&jobs), ["p1", "p2", "p3"]);
        assert_eq!(tags(q.held.make_contiguous()), ["4"]);
    }
}
