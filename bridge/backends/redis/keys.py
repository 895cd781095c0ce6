"""The Redis key layout, the same on one Redis and on a Redis Cluster.

Every key one command or script touches together shares a hash tag (the part in braces), so it
lives in one slot; so does the channel a script publishes on. Key names and formats are stored
data: changing one strands what is stored. With P the key prefix (`settings.key_prefix`):

    P:{run_<id>}:run          hash {version, data, final}: the run's `to_storage()` bytes, its version
                              and whether its status is final; TTL = retention, refreshed on every write
    P:{run_<id>}:stream:<key>  stream of a run's chunks (output, or input for `$in:` keys), entry id
                              0-<index + 1>, field d = the chunk's JSON; TTL = retention, refreshed on
                              every append
    P:{run_<id>}:stream-failed:<key>  hash {next, reason}: set once when the output stream failed (no
                              chunk is appended after it: readers end with an error at index `next`);
                              TTL = retention
    P:{run_<id>}:stream-epoch:<key>  string: the stream's epoch (16 hex characters), set by the script that
                              stores its first chunk (or its failure record) when it has none; TTL = the
                              stream's, refreshed with it. Lost with the stream (FLUSHALL, a failover that
                              missed writes): a stream written again gets a new one, and readers that
                              know the old one are told the stream was reset
    P:{run_<id>}:inkeys:<key>  hash of an input stream's idempotency keys: key -> the index of the value
                              it stored; TTL = retention, refreshed on every keyed append
    P:{run_<id>}:journal      list of the run's journal entries, in order (entry n at index n); TTL =
                              retention, refreshed with the attempt's by every accepted
                              begin_attempt and append (so either may outlive the run hash a little)
    P:{run_<id>}:attempt      string: the run's current attempt (an int; none = 0); TTL as the journal's
    P:{tag:<tag>}:runs        sorted set run id -> createdAt ms; TTL = retention, refreshed and
                              trimmed to runs created within the retention on every insert
    P:{batch:<id>}:runs       list of run ids in insertion order; TTL = retention, at most
                              BATCH_INDEX_MAX_RUNS ids
    P:{idem:<scope>}          string: the run or token id owning an idempotency scope; TTL = the key's TTL
                              (a debounced run's: `debounce:<task>:<key>:after:<previous run id>`, the
                              retention; bridge/runtime/debounce.py)
    P:{once:<key>}            string: a one-time key (`claim_once`); TTL = the given ttl
    P:{value:<key>}           string: a value (`put_value`: a batch's run count, a packet, a debounce key's
                              current run id under `debounce:<task>:<key>`); TTL = the given ttl
    P:{waitpoint_<id>}:waitpoint  hash {spec, result}: a wait token's creation record and, once done, its
                              result; TTL = retention after the deadline, then retention after the result
    P:{waitpoint_<id>}:waiters  set of the ids of the runs parked on the token; TTL = the token hash's
                              TTL when a run was last added, so never longer than the token (a
                              completion extends only the token's); never created for an unknown token
    P:{waitpoints}:deadlines  sorted set token id -> deadline ms, until the timer fired it (one key:
                              every process's timer reads it; a member is ~40 bytes)
    P:{tasks}                 set of registered task ids; no TTL (tiny), and re-added by this
                              process after every reconnection, in case Redis lost its data
    P:{queue}:task:<task_id>  stream of queued run ids with the consumer group "workers"; every
                              stream shares the {queue} tag, so one XREADGROUP over several
                              streams, and one heartbeat script, work in Cluster
    P:{queue}:gate:<queue>[|<key>]:running  set of the run ids holding a slot of a concurrency gate (a queue,
                              or a concurrency key's copy of it; queue names hold no `|`); no TTL: emptied as
                              runs end or park
    P:{queue}:gate:<queue>[|<key>]:waiting  sorted set `<run id>|<task id>` -> (queued-at ms - priority ms) *
                              1000 + sequence: the gate's waiting runs, the lowest admitted first
    P:{queue}:gate:<queue>[|<key>]:limit  string: the gate's concurrency limit, as its last admission gave it
    P:{queue}:gate:<queue>[|<key>]:sequence  counter ordering waiting runs of the same ms
                              (gate.lua admits and releases; it deletes the limit and sequence once nothing
                              holds a slot nor waits, so a concurrency key value used once leaves nothing)
    P:{queue}:gates:crowded   set of the gates (`<queue>[|<key>]`) that have waiting runs, kept by gate.lua:
                              what the sweep of slots lost to a crash reads (docs/queues.md)
    P:{tasks}:queues          hash `task:<task id>` -> its declared queue (JSON [name, limit]) and
                              `queue:<name>` -> the limit a task declared for it (JSON int or null); no TTL
                              (one field per task and queue), re-set by every worker start

Pub/sub channels on the wire, one Redis: `P:<channel>` (`P:run:<id>`, `P:tag:<tag>`, `P:batch:<id>`,
`P:stream:<run>:<key>`, `P:waitpoint:<id>`, `P:control:cancel`). A cluster's sharded channels live in
a slot, so there they are `P:{<owner>}:<channel>`, hash-tagged like their owner's keys
(`bridge/backends/channels.py`: `channel_owner`): `P:{run_<id>}:run:run_<id>`,
`P:{run_<id>}:stream:run_<id>:<key>`, `P:{waitpoint_<id>}:waitpoint:waitpoint_<id>`,
`P:{tag:<tag>}:tag:<tag>`, `P:{batch:<id>}:batch:<id>`, `P:{control:cancel}:control:cancel`. So a
script publishes (SPUBLISH) a run's, stream's or token's change in the slot of the keys it stores it
in; tag and batch channels live in their indexes' slots and are published after the run is stored
(runs.py). Subscribers map wire names back to channels (pubsub.py).

What spans hash tags is never one script but steps, in an order a crash between them leaves safe:
- a run's insert: its idempotency scope (`{idem:...}`, claim_idempotency.lua) first, then its tag
  and batch indexes, then the run itself (store_run.lua): an index never misses a stored run (a
  listener that attached and then reads an index finds it), and a scope whose run was never stored
  is taken over by the next insert after a settle time (idempotency.py); an index entry whose run
  was never stored is skipped by every read;
- a run's change: stored and published on the run's channel in one script; in a cluster its tag and
  batch channels are published right after (each in its own slot), so a process dying in between
  leaves those feeds without that change until the run's next one or their next resync;
- a wait token's insert: its deadline (`{waitpoints}`) first, then the token's hash: the timer drops
  a deadline whose token was never stored;
- a run parking on a wait token (engine.park): the run (`{run_<id>}`) records what it waits for,
  then joins the token's waiters (`{waitpoint_<id>}`), and only then is its delivery acknowledged:
  a crash in between runs the execution again, which parks again; the parking worker re-reads the
  token afterwards, so a completion in between is not missed;
- an input send's idempotency keys live under the run's tag (`{run_<id>}:inkeys:...`): one script.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.backends.channels import channel_owner


def gate_name(queue: str, key: str | None) -> str:
    """A gate's name in its keys: the queue, then `|` and the concurrency key (queue names hold no `|`)."""
    return queue if key is None else f"{queue}|{key}"


def parse_gate_name(name: str) -> tuple[str, str | None]:
    queue, separator, key = name.partition("|")
    return queue, key if separator else None


@dataclass(frozen=True)
class Keys:
    prefix: str
    sharded: bool = False  # a cluster's channels: hash-tagged

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:{{{run_id}}}:run"

    def run_stream(self, run_id: str, key: str) -> str:
        """One of a run's streams: an output stream, or an input stream (its key starts with `$in:`)."""
        return f"{self.prefix}:{{{run_id}}}:stream:{key}"

    def run_stream_failure(self, run_id: str, key: str) -> str:
        """An output stream's failure record, once it failed."""
        return f"{self.prefix}:{{{run_id}}}:stream-failed:{key}"

    def run_stream_epoch(self, run_id: str, key: str) -> str:
        """One of a run's streams' epoch (output or input stream)."""
        return f"{self.prefix}:{{{run_id}}}:stream-epoch:{key}"

    def input_keys(self, run_id: str, key: str) -> str:
        """The idempotency keys of one of a run's input streams (`key` starts with `$in:`)."""
        return f"{self.prefix}:{{{run_id}}}:inkeys:{key}"

    def journal(self, run_id: str) -> str:
        return f"{self.prefix}:{{{run_id}}}:journal"

    def attempt(self, run_id: str) -> str:
        return f"{self.prefix}:{{{run_id}}}:attempt"

    def tag(self, tag: str) -> str:
        return f"{self.prefix}:{{tag:{tag}}}:runs"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:{{batch:{batch_id}}}:runs"

    def idempotency(self, scope: str) -> str:
        return f"{self.prefix}:{{idem:{scope}}}"

    def once(self, key: str) -> str:
        return f"{self.prefix}:{{once:{key}}}"

    def value(self, key: str) -> str:
        return f"{self.prefix}:{{value:{key}}}"

    def waitpoint(self, token_id: str) -> str:
        return f"{self.prefix}:{{{token_id}}}:waitpoint"

    def waitpoint_waiters(self, token_id: str) -> str:
        return f"{self.prefix}:{{{token_id}}}:waiters"

    def deadlines(self) -> str:
        return f"{self.prefix}:{{waitpoints}}:deadlines"

    def tasks(self) -> str:
        return f"{self.prefix}:{{tasks}}"

    def task_queue(self, task_id: str) -> str:
        return f"{self.task_queue_prefix()}{task_id}"

    def task_queues(self) -> str:
        return f"{self.prefix}:{{tasks}}:queues"

    def task_queue_prefix(self) -> str:
        """What a task id completes into its stream's key (`task_queue`), for scripts that queue runs."""
        return f"{self.prefix}:{{queue}}:task:"

    def gate(self, queue: str, key: str | None) -> list[str]:
        """A concurrency gate's keys, in gate.lua's order: running, waiting, limit, sequence, and the set of
        crowded gates."""
        base = f"{self.prefix}:{{queue}}:gate:{gate_name(queue, key)}"
        return [f"{base}:running", f"{base}:waiting", f"{base}:limit", f"{base}:sequence", self.crowded_gates()]

    def crowded_gates(self) -> str:
        return f"{self.prefix}:{{queue}}:gates:crowded"

    def wire(self, channel: str) -> str:
        """A pub/sub channel's name on the wire (a cluster's: in its owner's slot)."""
        if self.sharded:
            return f"{self.prefix}:{{{channel_owner(channel)}}}:{channel}"
        return f"{self.prefix}:{channel}"
