import test from 'ava';
import { Fifo } from '../../src/receiver/fifo.js';
import { rngUnit } from '../helpers/hostile.js';

test('Fifo behaves as an array used as a queue: random push/shift/clear, growth past the ring, at() and find() at every step', (t) => {
  const rnd = rngUnit(7);
  const q = new Fifo<number>(2);
  const ref: number[] = [];
  let next = 0;
  let mismatches = 0;
  for (let step = 0; step < 20_000; step++) {
    const r = rnd();
    if (r < 0.55) {
      q.push(next);
      ref.push(next++);
    } else if (r < 0.995) {
      if (q.shift() !== ref.shift()) mismatches++;
    } else {
      q.clear();
      ref.length = 0;
    }
    if (q.length !== ref.length) mismatches++;
    const i = Math.floor(rnd() * (ref.length + 2)) - 1;
    if (q.at(i) !== ref[i]) mismatches++;
    const k = next - Math.floor(rnd() * 8);
    if (q.find((v) => v >= k) !== ref.find((v) => v >= k)) mismatches++;
  }
  t.is(mismatches, 0);
  t.true(next > 5000);
  t.is(q.shift(), ref.shift());
});

test('Fifo: empty answers undefined; at() out of range is undefined; what was shifted is not kept', (t) => {
  const q = new Fifo<object>();
  t.is(q.shift(), undefined);
  t.is(q.at(0), undefined);
  const a = {};
  q.push(a);
  t.is(q.at(0), a);
  t.is(q.at(1), undefined);
  t.is(q.at(-1), undefined);
  t.is(q.shift(), a);
  t.is(q.length, 0);
  t.is((q as unknown as { slots: unknown[] }).slots.indexOf(a), -1);
});
