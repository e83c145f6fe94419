/**
 * fifo.ts — a first-in first-out queue over a ring of slots that it keeps: push and shift
 * allocate nothing once the ring is big enough (a JS array used as a queue does: shift()
 * left-trims its store and the next push() grows a new one, and an array emptied to length 0
 * drops its store). For the short per-connection queues that fill and empty on every request.
 *
 * Owns its slots; grows (doubling) without bound — the owner bounds the length. Not
 * iterable (a generator would allocate): use at(i) from 0 to length - 1. Single-threaded.
 */
export class Fifo<T> {
  private slots: Array<T | undefined>;
  private head = 0;
  private n = 0;

  constructor(capacity = 4) {
    this.slots = new Array<T | undefined>(Math.max(1, capacity)).fill(undefined);
  }

  get length(): number {
    return this.n;
  }

  /** the i-th oldest (0: the next shift()), undefined out of range */
  at(i: number): T | undefined {
    if (i < 0 || i >= this.n) return undefined;
    return this.slots[(this.head + i) % this.slots.length];
  }

  push(v: T): void {
    if (this.n === this.slots.length) {
      const next = new Array<T | undefined>(this.slots.length * 2).fill(undefined);
      for (let i = 0; i < this.n; i++) next[i] = this.slots[(this.head + i) % this.slots.length];
      this.slots = next;
      this.head = 0;
    }
    this.slots[(this.head + this.n) % this.slots.length] = v;
    this.n++;
  }

  shift(): T | undefined {
    if (this.n === 0) return undefined;
    const v = this.slots[this.head];
    this.slots[this.head] = undefined; // no reference kept to what left
    this.head = (this.head + 1) % this.slots.length;
    this.n--;
    return v;
  }

  /** the oldest entry that satisfies `pred` */
  find(pred: (v: T) => boolean): T | undefined {
    for (let i = 0; i < this.n; i++) {
      const v = this.slots[(this.head + i) % this.slots.length] as T;
      if (pred(v)) return v;
    }
    return undefined;
  }

  clear(): void {
    this.slots.fill(undefined);
    this.head = 0;
    this.n = 0;
  }
}
