// De-duplication of server messages by `seq` alone (docs/protocol.md, "Message numbers").
//
// The server numbers every JSON message of a session 1, 2, 3, ...; a message it mirrors on the
// WebSocket and the `events` data channel carries the same number on both, and a reply sent on
// one channel only (pong, an error answering that channel) takes a number of its own. So:
// - the first copy of a number to arrive, on either channel, is used; any later copy is dropped;
// - a number lower than the highest seen but not seen itself is used: the two channels are
//   independent streams, and a one-channel reply may be overtaken on the other channel;
// - a number more than SEQ_WINDOW below the highest seen is dropped as a stale copy (the
//   numbers remembered are bounded to that window);
// - a message without a usable `seq` (a refusal sent before the session exists) is used.
// One filter per connection: a new WebSocket is a new session, numbered from 1 again.

/** How far below the highest number seen a message is still told apart from a stale copy. */
export const SEQ_WINDOW = 4096;

export class SeqFilter {
  private seen = new Set<number>();
  private highest = 0;

  /** True when the message with this `seq` is to be used; false for a copy already used. */
  accept(seq: unknown): boolean {
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) return true;
    if (seq <= this.highest - SEQ_WINDOW || this.seen.has(seq)) return false;
    this.seen.add(seq);
    if (seq > this.highest) {
      this.highest = seq;
      if (this.seen.size > 2 * SEQ_WINDOW) {
        for (const n of this.seen) if (n <= this.highest - SEQ_WINDOW) this.seen.delete(n);
      }
    }
    return true;
  }

  /** The numbers remembered (for tests: stays bounded). */
  get size(): number {
    return this.seen.size;
  }
}
