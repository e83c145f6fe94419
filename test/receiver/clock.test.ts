import test from 'ava';
import { MonotonicClock } from '../../src/receiver/clock.js';

test('kernel (monotonic) timestamps convert to the system clock, and re-measuring agrees to well under a millisecond', (t) => {
  const c = new MonotonicClock();
  const mono = process.hrtime.bigint();
  const wall = BigInt(Date.now()) * 1_000_000n;
  const got = c.toUnixNs(mono);
  // Date.now() truncates to the millisecond: got may lead it by < 1 ms, never lag or lead more
  t.true(got - wall > -1_000_000n && got - wall < 2_000_000n, `off by ${got - wall} ns`);
  const offsets: bigint[] = [];
  for (let i = 0; i < 5; i++) {
    c.measure();
    offsets.push(c.toUnixNs(0n));
  }
  const spread = offsets.reduce((a, b) => (b > a ? b : a)) - offsets.reduce((a, b) => (b < a ? b : a));
  t.true(spread < 200_000n, `offsets spread ${spread} ns`);
});

test('toUnixNs re-measures once a timestamp is past refreshMs since the last measurement, not before', async (t) => {
  const c = new MonotonicClock(20);
  let measured = 0;
  const orig = c.measure.bind(c);
  c.measure = () => {
    measured++;
    orig();
  };
  c.toUnixNs(process.hrtime.bigint());
  t.is(measured, 0, 'a timestamp from right after the first measurement');
  await new Promise((r) => setTimeout(r, 30));
  c.toUnixNs(process.hrtime.bigint());
  t.is(measured, 1, 'a timestamp 30 ms later');
  c.toUnixNs(process.hrtime.bigint());
  t.is(measured, 1, 'and not again right after');
});
