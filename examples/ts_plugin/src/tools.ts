// The plugin's two tools. Each gets the arguments as plain JSON values and
// the call's state, which says when the caller's deadline passed or it
// cancelled; it returns a JSON value, or throws: a ToolError's message is
// what the model is told.

/** An expected failure: its message is the is_error result, as written. */
export class ToolError extends Error {}

/** Thrown by a tool that stopped because its caller is gone: no result is sent. */
export class Stopped extends Error {}

export interface CallState {
  /** Why the call should stop ('deadline exceeded', 'cancelled'), or '' while it may go on. */
  stopped(): string;
}

export interface Tool {
  description: string;
  parameters: Record<string, unknown>;
  /** TOOL_MODE_ASYNC: the model is acknowledged at once, the result comes later. */
  async?: boolean;
  /** ASYNC only: what the model is told at once. */
  ack?: string;
  run(args: Record<string, unknown>, call: CallState): Promise<unknown>;
}

// Bounds count_primes' work (a few seconds of one core); the schema says so
// and the tool checks it again, since any local process may call us.
const MAX_BELOW = 10_000_000;
// How many count_primes runs at once: each holds the event loop in turns.
const MAX_PRIME_RUNS = 4;
let primeRuns = 0;

const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

async function weekday(args: Record<string, unknown>): Promise<unknown> {
  const date = args.date;
  if (typeof date !== 'string') throw new ToolError('INVALID_ARGUMENT: date must be a string');
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  const [year, month, day] = match ? match.slice(1).map(Number) : [0, 0, 0];
  const time = Date.UTC(year, month - 1, day);
  const parsed = new Date(time);
  // Date.UTC rolls 2026-02-30 over to March 2: the schema's pattern lets it
  // through, and it is a tool error, not a crash.
  if (!match || parsed.getUTCFullYear() !== year || parsed.getUTCMonth() !== month - 1 || parsed.getUTCDate() !== day) {
    throw new ToolError(`"${date}" is not a calendar date`);
  }
  const dayOfYear = (time - Date.UTC(year, 0, 1)) / 86_400_000 + 1;
  return { date, weekday: WEEKDAYS[parsed.getUTCDay()], day_of_year: dayOfYear };
}

function isPrime(n: number): boolean {
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

async function countPrimes(args: Record<string, unknown>, call: CallState): Promise<unknown> {
  const below = args.below;
  if (typeof below !== 'number' || !Number.isInteger(below) || below < 2 || below > MAX_BELOW) {
    throw new ToolError(`INVALID_ARGUMENT: below must be an integer from 2 to ${MAX_BELOW}`);
  }
  if (primeRuns >= MAX_PRIME_RUNS) {
    throw new ToolError(`RESOURCE_EXHAUSTED: ${MAX_PRIME_RUNS} counts are running already; try again later`);
  }
  primeRuns += 1;
  try {
    let count = 0;
    for (let n = 2; n < below; n++) {
      // Give the event loop a turn (other calls, the lease, a cancellation)
      // and stop once the caller is gone: nobody reads the answer.
      if (n % 16384 === 0) {
        await new Promise((resolve) => setImmediate(resolve));
        const why = call.stopped();
        if (why) throw new Stopped(why);
      }
      if (isPrime(n)) count += 1;
    }
    return { below, primes: count };
  } finally {
    primeRuns -= 1;
  }
}

export const TOOLS: Record<string, Tool> = {
  weekday: {
    description: 'Tell the weekday and the day of the year of a calendar date (YYYY-MM-DD).',
    parameters: {
      type: 'object',
      properties: {
        date: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}$', description: 'The date, for example 2026-12-03.' },
      },
      required: ['date'],
      additionalProperties: false,
    },
    run: weekday,
  },
  count_primes: {
    description: 'Count the prime numbers below a limit (up to ten million); runs in the background.',
    parameters: {
      type: 'object',
      properties: {
        below: { type: 'integer', minimum: 2, maximum: MAX_BELOW, description: 'Count the primes smaller than this.' },
      },
      required: ['below'],
      additionalProperties: false,
    },
    async: true,
    ack: 'Counting primes; the result will follow.',
    run: countPrimes,
  },
};
