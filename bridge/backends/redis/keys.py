"""The Redis key layout, laid out for Redis Cluster from the start.

Every key one command or script touches together shares a hash tag (the part in braces), so it
lives in one slot. Key names and formats are stored data: changing one strands what is stored.
With P the key prefix (`settings.key_prefix`):

    P:{run_<id>}:run          hash {version, data, final}: the run's `to_storage()` bytes, its version
                              and whether its status is final; TTL = retention, refreshed on every write
    P:{run_<id>}:stream:<key>  stream of a run's chunks (output, or input for `$in:` keys), entry id
                              0-<index + 1>, field d = the chunk's JSON; TTL = retention, refreshed on
                              every append
    P:{run_<id>}:stream-failed:<key>  hash {next, reason}: set once when the output stream failed (no
                              chunk is appended after it: readers end with an error at index `next`);
                              TTL = retention
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
    P:{once:<key>}            string: a one-time key (`claim_once`); TTL = the given ttl
    P:{value:<key>}           string: a value (`put_value`: a batch's run count, a packet); TTL = the given ttl
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

Pub/sub channels on the wire are `P:<channel>` (`P:run:<id>`, `P:tag:<tag>`, `P:batch:<id>`,
`P:stream:<run>:<key>`, `P:waitpoint:<id>`, `P:control:cancel`); the prefix is stripped before a
message reaches `on_message`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:{{{run_id}}}:run"

    def run_stream(self, run_id: str, key: str) -> str:
        """One of a run's streams: an output stream, or an input stream (its key starts with `$in:`)."""
        return f"{self.prefix}:{{{run_id}}}:stream:{key}"

    def run_stream_failure(self, run_id: str, key: str) -> str:
        """An output stream's failure record, once it failed."""
        return f"{self.prefix}:{{{run_id}}}:stream-failed:{key}"

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
        return f"{self.prefix}:{{queue}}:task:{task_id}"

    def wire(self, channel: str) -> str:
        """A pub/sub channel's name on the wire."""
        return f"{self.prefix}:{channel}"
