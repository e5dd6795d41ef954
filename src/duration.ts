// Durations as written in the config file and on the command line, in milliseconds.
import { InterceptorError } from './errors.js';

const ACCEPTED = 'a duration like "250ms", "5s", "1m", "1h" or "1m30s" (units h, m, s, ms, largest first), or a bare number of seconds';

const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
const UNIT_ORDER = ['h', 'm', 's', 'ms'];
const COMPONENT = /(\d+)(ms|h|m|s)/y;

function invalid(text: string | number, why: string): InterceptorError {
  return new InterceptorError('ERR_INVALID_DURATION', `invalid duration ${JSON.stringify(text)}: ${why}; expected ${ACCEPTED}`);
}

/**
 * Parses "250ms", "5s", "1m", "1h", "1m30s" (components largest unit first, each unit at most
 * once) into milliseconds. A number is taken as seconds (a bare TOML number); it may be
 * fractional as long as the result is a whole number of milliseconds.
 */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text)) throw invalid(text, 'not a finite number');
    if (text < 0) throw invalid(text, 'negative');
    const ms = Math.round(text * 1000);
    if (Math.abs(ms - text * 1000) > 1e-6) throw invalid(text, 'finer than a millisecond');
    if (!Number.isSafeInteger(ms)) throw invalid(text, 'too large');
    return ms;
  }
  if (typeof text !== 'string') throw invalid(String(text), 'not a string or number');
  if (text.length === 0) throw invalid(text, 'empty');
  if (text.startsWith('-')) throw invalid(text, 'negative');
  let total = 0;
  let pos = 0;
  let lastUnit = -1;
  COMPONENT.lastIndex = 0;
  while (pos < text.length) {
    COMPONENT.lastIndex = pos;
    const m = COMPONENT.exec(text);
    if (m === null) {
      const why = /^\d+$/.test(text) ? 'missing unit' : `unexpected ${JSON.stringify(text.slice(pos))}`;
      throw invalid(text, why);
    }
    const [whole, digits, unit] = m as unknown as [string, string, string];
    const order = UNIT_ORDER.indexOf(unit);
    if (order <= lastUnit) throw invalid(text, `unit "${unit}" out of order or repeated`);
    lastUnit = order;
    total += Number(digits) * (UNIT_MS[unit] as number);
    pos += whole.length;
  }
  if (!Number.isSafeInteger(total)) throw invalid(text, 'too large');
  return total;
}
