import { describe, expect, it } from "vitest";
import { SEQ_WINDOW, SeqFilter } from "./seqFilter";

const feed = (f: SeqFilter, seqs: unknown[]) => seqs.map((n) => f.accept(n));

describe("SeqFilter", () => {
  it("uses the first copy of each number and drops the mirrored one", () => {
    const f = new SeqFilter();
    // WebSocket 1 2 3, data channel 2 3 (it opened after 1), interleaved.
    expect(feed(f, [1, 2, 2, 3, 3])).toEqual([true, true, false, true, false]);
  });

  it("uses a lower number not seen yet: a one-channel reply overtaken on the other channel", () => {
    const f = new SeqFilter();
    // The data channel delivers 5 and 6 before the WebSocket's pong (4) and its own copies.
    expect(feed(f, [1, 2, 3, 5, 6, 4, 5, 6, 7])).toEqual([true, true, true, true, true, true, false, false, true]);
  });

  it("drops a repeat of any number, however late", () => {
    const f = new SeqFilter();
    feed(f, [1, 2, 3, 4]);
    expect(feed(f, [1, 3, 2, 4])).toEqual([false, false, false, false]);
  });

  it("uses messages without a usable seq (a refusal before the session exists)", () => {
    const f = new SeqFilter();
    expect(feed(f, [undefined, undefined, null, "3", 0, -1, 1.5])).toEqual([true, true, true, true, true, true, true]);
    expect(feed(f, [1, 1])).toEqual([true, false]);
  });

  it("remembers a bounded window; older numbers are stale copies", () => {
    const f = new SeqFilter();
    for (let n = 1; n <= 5 * SEQ_WINDOW; n++) expect(f.accept(n)).toBe(true);
    expect(f.size).toBeLessThanOrEqual(2 * SEQ_WINDOW + 1);
    expect(f.accept(5 * SEQ_WINDOW - 1)).toBe(false); // a copy, still remembered
    expect(f.accept(SEQ_WINDOW)).toBe(false); // far behind: a stale copy
    expect(f.accept(5 * SEQ_WINDOW + 2)).toBe(true); // a gap (the other channel's reply) is fine
  });

  it("a new filter (a new connection: a new session numbers from 1) starts afresh", () => {
    const f = new SeqFilter();
    feed(f, [1, 2, 3]);
    expect(new SeqFilter().accept(1)).toBe(true);
  });
});
